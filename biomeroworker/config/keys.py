"""Every key the worker reads, declared once with its parser, default and help; the
sections and the key shapes of [WORKFLOWS] and [CONVERTERS]."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from biomeroworker.config.values import (
    _absolute_path,
    _api_version,
    _boolean,
    _count,
    _database_url,
    _day,
    _http_url,
    _mirror_url,
    _one_of,
    _positive_int,
    _seconds,
    _seconds_or_zero,
    _text,
    _user_names,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- key tables


@dataclass(frozen=True)
class Key:
    """One fixed key of a section: how to parse it and what it defaults to."""

    name: str
    parse: Callable[[str], Any] = _text
    default: Any = None
    required: bool = False
    secret: bool = False
    help: str = ""


SSH_KEYS: tuple[Key, ...] = (
    Key("host", help="alias of the cluster in ~/.ssh/config"),
    Key(
        "inline_ssh_env",
        _boolean,
        True,
        help="upstream SSH option; no environment is sent over SSH here, either value",
    ),
)

SLURM_KEYS: tuple[Key, ...] = (
    # Defaults as biomero 2.8.3's, so upstream files that omit a folder mean the same here.
    Key("slurm_data_path", default="my-scratch/data", help="cluster folder for run data"),
    Key(
        "slurm_images_path",
        default="my-scratch/singularity_images/workflows",
        help="cluster folder for workflow images",
    ),
    Key(
        "slurm_converters_path",
        default="my-scratch/singularity_images/converters",
        help="cluster folder for converter images",
    ),
    Key("slurm_script_path", default="slurm-scripts", help="cluster folder for job scripts"),
    Key("slurm_script_repo", help="git URL of hand-written job scripts"),
    Key("slurm_data_bind_path", help="bound into workflow containers with --bind"),
    Key("slurm_conversion_partition", help="partition for conversion jobs"),
    Key("slurm_default_partition", help="partition when nothing else sets one"),
    Key("sacct_start_time", _day, help="oldest day of job history to list"),
    Key("sacct_days_ago", _count, help="rolling job-history window in days"),
    Key(
        "env_file_submission",
        _boolean,
        False,
        help="upstream: pass job env as a file; here values always reach jobs in a file",
    ),
    Key(
        "inject_gpu_flag",
        _boolean,
        False,
        help="upstream: a run switches the GPU on/off; refused when true (use <wf>_use_gpu)",
    ),
    Key("gpu_partition", help="partition for workflows that use a GPU"),
    Key("gpu_gres", help="--gres for workflows that use a GPU"),
    Key("gpu_gpus", help="--gpus for workflows that use a GPU"),
    Key(
        "gpu_resource_flag",
        _one_of("gres", "gpus"),
        help="refused when set: set gpu_gres or gpu_gpus, whichever flag your cluster uses",
    ),
    Key("slurm_image_pull_via_sbatch", _boolean, False, help="pull images in a Slurm job"),
    Key("image_pull_cpus", _positive_int, help="CPUs for image pull jobs"),
    Key("image_pull_mem", help="memory for image pull jobs, e.g. 32G"),
    Key("image_pull_time", help="time limit for image pull jobs"),
    Key("image_pull_concurrency", _positive_int, help="image pulls running at once"),
    Key("image_pull_partition", help="partition for image pull jobs"),
    Key("apptainer_tmpdir", help="APPTAINER_TMPDIR for image pulls"),
    Key("apptainer_cachedir", help="APPTAINER_CACHEDIR for image pulls"),
    Key(
        "slurm_zip_cmd",
        help="upstream archive command; results come back as a tar stream, either value",
    ),
)

ANALYTICS_KEYS: tuple[Key, ...] = (
    Key("track_workflows", _boolean, True, help="record workflow events"),
    Key("enable_job_accounting", _boolean, True, help="keep the job accounting view"),
    Key("enable_job_progress", _boolean, True, help="keep the job progress view"),
    Key("enable_workflow_analytics", _boolean, True, help="keep the task execution view"),
    Key("sqlalchemy_url", _database_url, secret=True, help="event store database"),
    Key("analytics_rebuild_start_time", _day, help="replay events from this day"),
    Key("analytics_rebuild_days_ago", _count, help="replay events of the last N days"),
)

# Our own settings. Adding one: a Key here and a field in WorkerSettings.
WORKER_KEYS: tuple[Key, ...] = (
    Key("transport", _one_of("ssh", "local", "rest"), "ssh", help="how commands reach the cluster"),
    Key(
        "shared_path",
        _absolute_path,
        help="local/shared mode: where the cluster's relative paths live on this host",
    ),
    Key("connect_timeout_s", _seconds, 15.0, help="SSH connect timeout"),
    Key("command_timeout_s", _seconds, 120.0, help="default remote command timeout"),
    Key(
        "transfer_idle_timeout_s",
        _seconds,
        300.0,
        help="a data transfer fails after this long without a byte moving (no total limit)",
    ),
    Key("keepalive_s", _seconds_or_zero, 30.0, help="SSH keep-alive interval, 0 = off"),
    Key("runtime", _one_of("apptainer", "singularity", "native"), "apptainer"),
    Key("native_python", default="python3", help="cluster Python for native workflows"),
    Key("max_runs_total", _count, 0, help="runs active at once, 0 = unlimited"),
    Key("max_runs_per_user", _count, 0, help="runs per user at once, 0 = unlimited"),
    Key(
        "poll_min_s",
        _seconds,
        1.0,
        help="wait between Slurm polls after something changed (then it grows by half "
        "each quiet poll up to poll_max_s)",
    ),
    Key("poll_max_s", _seconds, 60.0, help="longest wait between Slurm polls"),
    Key(
        "workflow_mirror",
        _mirror_url,
        help="where `biomero init` downloads pinned workflows instead of GitHub: "
        "<mirror>/<owner>/<repo>/<tag>/<file> (descriptor.json, descriptor.yaml or "
        "config.yaml, and the native runtime's wrapper.py)",
    ),
    Key(
        "job_unseen_limit_s",
        _seconds,
        900.0,
        help="a job Slurm's accounting has not listed for this long fails its run",
    ),
    Key(
        "step_attempts",
        _positive_int,
        3,
        help="a step that raises an unexpected error is tried this often, then its run fails",
    ),
    Key(
        "step_retry_s",
        _seconds,
        30.0,
        help="wait before retrying such a step; doubles with each failed attempt",
    ),
    Key(
        "convert_on",
        _one_of("cluster", "worker"),
        "cluster",
        help="where OME-Zarr inputs become TIFF: a Slurm job array, or here before upload",
    ),
    Key(
        "admins",
        _user_names,
        (),
        help="accounts that may see and cancel every run (besides root); read only from a "
        "config file owned by root and writable by root alone",
    ),
)

# [WORKER] transport = rest: Slurm operations through slurmrestd (docs/modes.md).
REST_KEYS: tuple[Key, ...] = (
    Key("url", _http_url, help="slurmrestd base URL, e.g. http://127.0.0.1:6820"),
    Key("user", help="cluster user sent as X-SLURM-USER-NAME"),
    Key("api_version", _api_version, "v0.0.38", help="OpenAPI version slurmrestd serves"),
    Key("token", secret=True, help="a JWT (also $SLURM_JWT); no refresh"),
    Key("token_file", _absolute_path, help="file holding the JWT; re-read when it changes"),
    Key("token_command", help="command printing a fresh JWT; run when the token nears exp"),
    Key("token_refresh_s", _seconds, 60.0, help="renew this long before the token expires"),
    Key("request_timeout_s", _seconds, 30.0, help="HTTP timeout per request"),
    Key("verify_tls", _boolean, True, help="check the server certificate for https"),
    Key("staging", _one_of("ssh", "shared"), "ssh", help="how data reaches the cluster"),
    Key("home", _absolute_path, help="the user's cluster home; relative paths start there"),
)

FIXED_SECTIONS: dict[str, tuple[Key, ...]] = {
    "SSH": SSH_KEYS,
    "SLURM": SLURM_KEYS,
    "ANALYTICS": ANALYTICS_KEYS,
    "WORKER": WORKER_KEYS,
    "REST": REST_KEYS,
}
WORKFLOWS = "WORKFLOWS"
CONVERTERS = "CONVERTERS"
# Written by the OMERO.biomero admin page for its own use ([UI]; [changelog], a comment
# per save); the worker ignores them.
OPAQUE_SECTIONS = ("UI", "CHANGELOG")
SECTION_ALIASES = {"MODELS": WORKFLOWS}
KNOWN_SECTIONS = (*FIXED_SECTIONS, WORKFLOWS, "MODELS", CONVERTERS, *OPAQUE_SECTIONS)

_SBATCH_PREFIX = "sbatch_"
_FLAG_NAME = re.compile(r"[a-z0-9_-]+")
_WORKFLOW_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_WORKFLOW_SUFFIXES = ("_repo", "_job", "_use_gpu", "_resubmit", "_skills_path", "_plugin_path")
_FOLDER = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_CONVERTER_KEY = re.compile(r"[a-z0-9]+_to_[a-z0-9]+")
ZARR_TO_TIFF = "zarr_to_tiff"
_GITHUB_TREE = re.compile(
    r"https://github\.com/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)"
    r"/tree/(?P<tag>[A-Za-z0-9_.+-]+)"
)
_BRANCH_NAMES = frozenset({"main", "master", "develop", "dev", "head", "latest", "trunk"})
_SECTION_HINTS = {
    "SSH": "user, port and key belong in ~/.ssh/config under the host alias",
}
