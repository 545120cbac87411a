"""Read-model tables, written only by the projection and rebuilt from events at will.

The four ``biomero_*view`` / ``biomero_task_execution`` tables keep the names, columns,
types and NOT NULLs that biomero 2.8 (``biomero/database.py``) gives them, so
OMERO.biomero dashboards keep working and a database biomero created is used as it is.
``user``/``group`` there are OMERO ids; runs without one (CLI runs) carry -1, upstream's
own value. ``biomero_run`` and ``biomero_task`` serve our CLI, scripts and analytics,
and hold the per-run and per-task state biomero's views keep in process memory.
Timestamps are naive UTC, as upstream stores them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
)

metadata = MetaData()

# The projection's position in the notification log; one row per projection.
positions = Table(
    "biomero_projection_position",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

job_view = Table(
    "biomero_job_view",
    metadata,
    Column("slurm_job_id", Integer, primary_key=True, autoincrement=False),
    Column("user", Integer, nullable=False),
    Column("group", Integer, nullable=False),
    Column("task_id", Uuid),
)

job_progress_view = Table(
    "biomero_job_progress_view",
    metadata,
    Column("slurm_job_id", Integer, primary_key=True, autoincrement=False),
    Column("status", String, nullable=False),
    Column("progress", String, nullable=True),
)

workflow_progress_view = Table(
    "biomero_workflow_progress_view",
    metadata,
    Column("workflow_id", Uuid, primary_key=True),
    Column("status", String, nullable=True),
    Column("progress", String, nullable=True),
    Column("user", Integer, nullable=True),
    Column("group", Integer, nullable=True),
    Column("name", String, nullable=True),
    Column("task", String, nullable=True),
    Column("main_task_name", String, nullable=True),
    Column("start_time", DateTime, nullable=False),
)

task_execution = Table(
    "biomero_task_execution",
    metadata,
    Column("task_id", Uuid, primary_key=True),
    Column("task_name", String, nullable=False),
    Column("task_version", String),
    Column("user_id", Integer, nullable=True),
    Column("group_id", Integer, nullable=True),
    Column("status", String, nullable=False),
    Column("start_time", DateTime, nullable=False),
    Column("end_time", DateTime, nullable=True),
    Column("error_type", String, nullable=True),
)

runs = Table(
    "biomero_run",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("workflow", String, nullable=False),
    Column("version", String, nullable=False),
    Column("user_name", String, nullable=False),
    Column("omero_user_id", Integer, nullable=True),
    Column("omero_group_id", Integer, nullable=True),
    Column("state", String, nullable=False),
    Column("step", String, nullable=True),
    Column("inputs", Text, nullable=False),
    Column("parameters", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("ended_at", DateTime, nullable=True),
    Column("error_type", String, nullable=True),
    Column("error", Text, nullable=True),
    Column("result_location", Text, nullable=True),
    Column("slurm_job_ids", Text, nullable=False),
    Column("cluster", String, nullable=True),
    # "biomero" (recorded by biomero 2.x: read-only history) or "worker" (ours)
    Column("origin", String(16), nullable=False),
    # what biomero's WorkflowProgress view keeps in memory, per run
    Column("wf_name", String, nullable=True),
    Column("dash_user", Integer, nullable=True),
    Column("dash_group", Integer, nullable=True),
    Column("dash_status", String, nullable=True),
    Column("dash_progress", String, nullable=True),
    Column("current_task", String, nullable=True),
    Column("main_task", String, nullable=True),
    Column("task_progress", String, nullable=True),
    # `biomero status` pages newest first by (created_at, run_id), everyone's or one
    # user's: each page is a range scan of one of these (queries.list_runs).
    Index("ix_biomero_run_created", "created_at", "run_id"),
    Index("ix_biomero_run_user_created", "user_name", "created_at", "run_id"),
)

tasks = Table(
    "biomero_task",
    metadata,
    Column("task_id", String(36), primary_key=True),
    Column("run_id", String(36), nullable=False, index=True),
    Column("kind", String, nullable=False),
    Column("name", String, nullable=False),
    Column("version", String, nullable=True),
    Column("state", String, nullable=False),
    Column("slurm_job_id", String, nullable=True),
    Column("job_number", Integer, nullable=True),
    Column("cluster", String, nullable=True),
    Column("job_state", String, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("elapsed_s", Float, nullable=True),
    Column("max_rss_bytes", BigInteger, nullable=True),
    Column("progress", String, nullable=True),
    Column("result_locations", Text, nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("ended_at", DateTime, nullable=True),
    Column("error_type", String, nullable=True),
    Column("error", Text, nullable=True),
    # biomero's view state: linked once the run's TaskAdded was seen; status as shown
    Column("linked", Boolean, nullable=False),
    Column("dash_status", String, nullable=False),
)

# Running totals for `biomero stats` (analytics.py), kept by the projection as it applies
# events (totals.py) and refilled from biomero_run/biomero_task when new. Each row is a
# group: the UTC day a run was created, plus what an analysis groups or filters by, so
# reading them costs the number of groups, not the number of runs. A row whose count
# falls to zero is deleted: the totals always equal a fresh aggregation of the rows.
run_totals = Table(
    "biomero_run_totals",
    metadata,
    Column("day", Date, primary_key=True),
    Column("workflow", String, primary_key=True),
    Column("user_name", String, primary_key=True),
    Column("runs", Integer, nullable=False),
    Column("completed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Index("ix_biomero_run_totals_user", "user_name", "day"),
)

# The same per calendar month (``month``: its first day): runs per workflow by month or
# year reads one row per month instead of one per day (a day per workflow and user is
# about as many rows as runs until a site has millions).
run_month_totals = Table(
    "biomero_run_month_totals",
    metadata,
    Column("month", Date, primary_key=True),
    Column("workflow", String, primary_key=True),
    Column("user_name", String, primary_key=True),
    Column("runs", Integer, nullable=False),
    Column("completed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Index("ix_biomero_run_month_totals_user", "user_name", "month"),
)

failure_totals = Table(
    "biomero_failure_totals",
    metadata,
    Column("day", Date, primary_key=True),
    Column("user_name", String, primary_key=True),
    # "unknown" and "-" for a failure that names no error type or step
    Column("error_type", String, primary_key=True),
    Column("step", String, primary_key=True),
    Column("runs", Integer, nullable=False),
    Index("ix_biomero_failure_totals_user", "user_name", "day"),
)

# Tasks with a Slurm job, per day and owner: jobs, how many report an elapsed time and
# its sum (sacct's whole seconds: sums stay exact), and the largest MaxRSS.
slurm_totals = Table(
    "biomero_slurm_totals",
    metadata,
    Column("day", Date, primary_key=True),
    Column("user_name", String, primary_key=True),
    Column("jobs", Integer, nullable=False),
    Column("elapsed_n", Integer, nullable=False),
    Column("elapsed_s", Float, nullable=False),
    Column("max_rss_bytes", BigInteger, nullable=True),
    Index("ix_biomero_slurm_totals_user", "user_name", "day"),
)

# Completed tasks' durations as histograms: per step kind (and per owner), how many
# tasks took each duration rounded to three significant digits (``bucket_us``, in
# microseconds) and their exact sum. Not per day: a day's histogram holds about as many
# rows as the day has tasks; `stats --since` reads the tasks themselves.
step_totals = Table(
    "biomero_step_totals",
    metadata,
    Column("kind", String, primary_key=True),
    Column("bucket_us", BigInteger, primary_key=True, autoincrement=False),
    Column("tasks", Integer, nullable=False),
    Column("sum_us", BigInteger, nullable=False),
)

user_step_totals = Table(
    "biomero_user_step_totals",
    metadata,
    Column("user_name", String, primary_key=True),
    Column("kind", String, primary_key=True),
    Column("bucket_us", BigInteger, primary_key=True, autoincrement=False),
    Column("tasks", Integer, nullable=False),
    Column("sum_us", BigInteger, nullable=False),
)

TOTALS_TABLES: tuple[Table, ...] = (
    run_totals,
    run_month_totals,
    failure_totals,
    slurm_totals,
    step_totals,
    user_step_totals,
)

# The dashboards' tables: emptied and refilled by a rebuild, never dropped (whoever
# created them, biomero or us, keeps its DDL).
DASHBOARD_TABLES: tuple[Table, ...] = (
    job_view,
    job_progress_view,
    workflow_progress_view,
    task_execution,
)
# Our own read models: dropped and recreated by a rebuild.
OWN_TABLES: tuple[Table, ...] = (runs, tasks, *TOTALS_TABLES)

VIEW_TABLES: tuple[Table, ...] = (*DASHBOARD_TABLES, *OWN_TABLES)
