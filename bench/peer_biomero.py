"""The biomero 2.8.3 half of the benchmarks. Runs in .venv-peer (tools/install-peer-biomero),
never in ours.

Called by bench/main.py as ``python peer_biomero.py TASK JSON`` and prints one JSON object.
Every measurement drives biomero's own SlurmClient (a fabric Connection) against the
same ssh alias as ours; remote commands are counted by wrapping the client's ``run`` in
this process only. Transfers follow biomero's documented path: a local ZIP
(``shutil.make_archive``, as biomero-scripts' _SLURM_Image_Transfer does), one SFTP put
(``transfer_data``), ``7z x`` on the login node (``unpack_data``); results come back with
``zip_data_on_slurm_server`` (7z a -tzip), ``copy_zip_locally`` (SFTP get) and a local
``zipfile`` extract (as SLURM_Get_Results does).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import sys
import time
import uuid
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import biomero.slurm_client as biomero_client
from biomero import SlurmClient
from biomero.slurm_client import SlurmJob

# Absolute, as on real clusters: biomero zips results after a `cd` into the output folder.
HOME = "/home/hpcuser"  # replaced by opts["home"] in main()
DATA = f"{HOME}/bench-biomero/data"
SCRIPTS = f"{HOME}/bench-biomero/slurm-scripts"
WORKFLOW = "noop"
VERSION = "v1"


class _Stop(Exception):
    """Ends a poll loop after the wanted number of cycles."""


class FakeOmeroConnection:
    """biomero's wait loop keeps an OMERO session alive; no OMERO server runs here."""

    def keepAlive(self) -> bool:  # noqa: N802 - the name biomero calls
        return True


class Counted:
    """Counts remote commands (``run``) and SFTP transfers of one SlurmClient."""

    def __init__(self, client: SlurmClient) -> None:
        self.commands = 0
        self.transfers = 0
        run, put, get = client.run, client.put, client.get

        def counted_run(*args: Any, **kwargs: Any) -> Any:
            self.commands += 1
            kwargs.setdefault("hide", True)
            return run(*args, **kwargs)

        def counted_put(*args: Any, **kwargs: Any) -> Any:
            self.transfers += 1
            return put(*args, **kwargs)

        def counted_get(*args: Any, **kwargs: Any) -> Any:
            self.transfers += 1
            return get(*args, **kwargs)

        client.run, client.put, client.get = counted_run, counted_put, counted_get


def make_client(opts: dict[str, Any]) -> tuple[SlurmClient, Counted]:
    os.environ["SQLALCHEMY_URL"] = f"sqlite:///{opts['store']}"
    client = SlurmClient(
        host=opts.get("host", "localslurm"),
        slurm_data_path=DATA,
        slurm_images_path=f"{HOME}/bench-biomero/images",
        slurm_converters_path=f"{HOME}/bench-biomero/converters",
        slurm_script_path=SCRIPTS,
        slurm_model_paths={WORKFLOW: WORKFLOW},
        slurm_model_repos={WORKFLOW: "https://github.com/example/W_NoOp/tree/v1"},
        slurm_model_images={WORKFLOW: "biomero/w_noop"},
        slurm_model_jobs={WORKFLOW: "jobs/noop.sh"},
        slurm_model_jobs_params={WORKFLOW: []},
        slurm_default_partition=opts.get("partition", "cpu-short"),
        slurm_zip_cmd=SlurmClient._DEFAULT_SLURM_ZIP_CMD,  # what from_config defaults to
        track_workflows=True,
        sqlalchemy_url=f"sqlite:///{opts['store']}",
    )
    descriptor = json.loads(Path(opts["descriptor"]).read_text()) if "descriptor" in opts else {}
    # biomero reads descriptors from GitHub through a cache; nothing is reachable here, so
    # the cached answer is the local descriptor.
    client.generic_descriptor_from_github = lambda workflow: descriptor  # type: ignore[method-assign]
    client.run(f"mkdir -p {DATA} {SCRIPTS}/jobs", hide=True)
    return client, Counted(client)


def _remote_files(client: SlurmClient, path: str) -> int:
    out = client.run(f'find "{path}" -type f | wc -l', hide=True, warn=True).stdout.strip()
    return int(out or 0)


# --- item 1: staging -------------------------------------------------------------------


def staging_up(opts: dict[str, Any]) -> dict[str, Any]:
    client, _ = make_client(opts)
    export_dir, tmp = Path(opts["export_dir"]), Path(opts["tmp"])
    tmp.mkdir(parents=True, exist_ok=True)
    reps = []
    left_remote: list[str] = []  # with defer_cleanup: the caller removes these later
    left_local: list[str] = []
    for _ in range(opts["reps"]):
        name = f"up_{uuid.uuid4().hex[:8]}"
        base = tmp / name
        t0 = time.perf_counter()
        archive = shutil.make_archive(str(base), "zip", str(export_dir))
        t1 = time.perf_counter()
        client.transfer_data(archive)
        t2 = time.perf_counter()
        client.unpack_data(name)
        t3 = time.perf_counter()
        arrived = _remote_files(client, f"{DATA}/{name}/data/in")
        if opts.get("defer_cleanup"):
            left_remote += [f"{DATA}/{name}", f"{DATA}/{name}.zip"]
            left_local.append(archive)
        else:
            client.run(f'rm -rf "{DATA}/{name}" "{DATA}/{name}.zip"', hide=True)
            os.unlink(archive)
        reps.append(
            {
                "zip_s": t1 - t0,
                "put_s": t2 - t1,
                "unzip_s": t3 - t2,
                "total_s": t3 - t0,
                "files_arrived": arrived,
            }
        )
    client.close()
    return {"reps": reps, "left_remote": left_remote, "left_local": left_local}


def staging_down(opts: dict[str, Any]) -> dict[str, Any]:
    """``opts['location']`` holds ``data/out/<dataset>`` on the cluster (put there untimed)."""
    client, _ = make_client(opts)
    tmp = Path(opts["tmp"])
    tmp.mkdir(parents=True, exist_ok=True)
    location = opts["location"]
    reps = []
    left_remote: list[str] = []  # with defer_cleanup: the caller removes these later
    left_local: list[str] = []
    for _ in range(opts["reps"]):
        name = f"down_{uuid.uuid4().hex[:8]}"
        local_zip = tmp / f"{name}.zip"
        local_dir = tmp / name
        t0 = time.perf_counter()
        client.zip_data_on_slurm_server(location, name)
        t1 = time.perf_counter()
        client.copy_zip_locally(str(local_zip), f"{location}/{name}")
        t2 = time.perf_counter()
        with zipfile.ZipFile(local_zip) as archive:
            archive.extractall(local_dir)
        t3 = time.perf_counter()
        arrived = sum(len(files) for _, _, files in os.walk(local_dir))
        if opts.get("defer_cleanup"):
            left_remote.append(f"{location}/{name}.zip")
            left_local += [str(local_zip), str(local_dir)]
        else:
            client.run(f'rm -f "{location}/{name}.zip"', hide=True)
            local_zip.unlink()
            shutil.rmtree(local_dir)
        reps.append(
            {
                "zip_s": t1 - t0,
                "get_s": t2 - t1,
                "unzip_s": t3 - t2,
                "total_s": t3 - t0,
                "files_arrived": arrived,
            }
        )
    client.close()
    return {"reps": reps, "left_remote": left_remote, "left_local": left_local}


# --- item 2: polling -------------------------------------------------------------------


def poll(opts: dict[str, Any]) -> dict[str, Any]:
    """Per cycle: check_job_status(all ids) once, and the body of SlurmJob.wait_for_completion
    for every job (check_job_status([id]) + get_active_job_progress(id)), as the workflow
    script waits for each job of a run."""
    client, counted = make_client(opts)
    ids = [int(i) for i in opts["job_ids"]]
    out: dict[str, Any] = {"list_call": [], "per_job_loop": [], "states_seen": None}
    for _ in range(opts["cycles"]):
        before, t0 = counted.commands, time.perf_counter()
        states, _result = client.check_job_status(ids)
        out["list_call"].append(
            {"commands": counted.commands - before, "wall_s": time.perf_counter() - t0}
        )
        out["states_seen"] = sorted(set(states.values()))
    for _ in range(opts["cycles"]):
        before, t0 = counted.commands, time.perf_counter()
        for job_id in ids:
            client.check_job_status([job_id])
            client.get_active_job_progress(job_id)
        out["per_job_loop"].append(
            {"commands": counted.commands - before, "wall_s": time.perf_counter() - t0}
        )
    client.close()
    return out


# --- item 3: end to end ----------------------------------------------------------------


def _job_script(python: str, wrapper: str) -> str:
    return (
        "#!/bin/bash\n"
        "#SBATCH --job-name=biomero-noop\n"
        "#SBATCH --time=00:10:00\n"
        "#SBATCH --mem=256M\n"
        "# Native stand-in for biomero's container job script (no Apptainer here).\n"
        'echo "Running noop Job w/ $IMAGE_PATH | $SINGULARITY_IMAGE | $DATA_PATH | native"\n'
        f'exec {python} {wrapper} --infolder "$DATA_PATH/data/in" '
        '--outfolder "$DATA_PATH/data/out" --gtfolder "$DATA_PATH/data/gt" --local -nmc\n'
    )


def _sacct_times(client: SlurmClient, job_id: int) -> tuple[float, float]:
    """(Elapsed seconds, End as epoch) from accounting; retried while slurmdbd catches up."""
    for _ in range(20):
        line = client.run(f"sacct -n -P -X -o Elapsed,End -j {job_id}", hide=True).stdout.strip()
        if line and "Unknown" not in line:
            elapsed, end = line.splitlines()[0].split("|")
            h, m, s = (int(x) for x in elapsed.split("-")[-1].split(":"))
            return h * 3600 + m * 60 + s, datetime.fromisoformat(end).timestamp()
        time.sleep(0.5)
    raise RuntimeError(f"sacct has no end time for job {job_id}")


def e2e(opts: dict[str, Any]) -> dict[str, Any]:
    client, counted = make_client(opts)
    wrapper = f"{SCRIPTS}/noop/wrapper.py"
    client.run(f"mkdir -p {SCRIPTS}/noop", hide=True)
    client.put(opts["wrapper"], wrapper)
    script = Path(opts["tmp"]) / "noop.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(_job_script(opts["python"], wrapper))
    client.put(str(script), f"{SCRIPTS}/jobs/noop.sh")
    export_dir, tmp = Path(opts["export_dir"]), Path(opts["tmp"])
    reps = []
    for _ in range(opts["reps"]):
        reps.append(_one_e2e(client, counted, export_dir, tmp))
    client.close()
    return {"reps": reps}


def _one_e2e(client: SlurmClient, counted: Counted, export_dir: Path, tmp: Path) -> dict:
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    before = counted.commands
    t0 = time.time()
    archive = shutil.make_archive(str(tmp / name), "zip", str(export_dir))
    client.transfer_data(archive)
    client.unpack_data(name)
    job = client.run_workflow_job(WORKFLOW, VERSION, name)
    state = job.wait_for_completion(client, FakeOmeroConnection())
    location = client.extract_data_location_from_log(str(job.job_id))
    out_name = f"{job.job_id}_out"
    client.zip_data_on_slurm_server(location, out_name)
    local_zip = tmp / f"{out_name}.zip"
    client.copy_zip_locally(str(local_zip), f"{location}/{out_name}")
    with zipfile.ZipFile(local_zip) as results:
        results.extractall(tmp / out_name)
    t_local = time.time()
    client.cleanup_tmp_files(str(job.job_id), f"{location}/{out_name}", location)
    t_end = time.time()
    commands = counted.commands - before
    elapsed, end_epoch = _sacct_times(client, job.job_id)
    files_back = sum(len(f) for _, _, f in os.walk(tmp / out_name))
    os.unlink(archive)
    local_zip.unlink()
    shutil.rmtree(tmp / out_name)
    return {
        "state": state,
        "total_s": t_end - t0,
        "job_elapsed_s": elapsed,
        "overhead_s": t_end - t0 - elapsed,
        "end_to_local_s": t_local - end_epoch,
        "commands": commands,
        "files_back": files_back,
        "job_id": job.job_id,
    }


# --- item 4: events per poll -----------------------------------------------------------


def _events(store: str) -> int:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT count(*) FROM workflowtracker_events").fetchone()[0]


def events(opts: dict[str, Any]) -> dict[str, Any]:
    """SlurmJob.wait_for_completion on a queued job (it may begin in 1 h) for N cycles,
    its 10 s sleep compressed. biomero's client takes shell strings; these are fixed."""
    client, _ = make_client(opts)
    submit = "sbatch --parsable --begin=now+3600 -p cpu-short -o /dev/null --wrap 'sleep 1'"
    result = client.run(submit, hide=True)
    job_id = int(result.stdout.strip())
    for _ in range(40):  # slurmdbd lists a new job after a moment
        if client.run(f"sacct -n -X -o JobId -j {job_id}", hide=True).stdout.strip():
            break
        time.sleep(0.5)
    wf = client.workflowTracker.initiate_workflow(WORKFLOW, VERSION, -1, -1)
    task = client.workflowTracker.add_task_to_workflow(wf, WORKFLOW, VERSION, "held", {})
    job = SlurmJob(result, job_id, wf, task)
    cycles = {"n": 0}
    per_cycle: list[int] = []
    real_sleep = biomero_client.timesleep.sleep

    def compressed(seconds: float) -> None:
        if seconds == job.slurm_polling_interval:
            cycles["n"] += 1
            per_cycle.append(_events(opts["store"]) - before)
            if cycles["n"] >= opts["cycles"]:
                raise _Stop
        real_sleep(opts.get("compressed_sleep_s", 0.3))

    before = _events(opts["store"])
    biomero_client.timesleep.sleep = compressed
    try:
        job.wait_for_completion(client, FakeOmeroConnection())
    except _Stop:
        pass
    finally:
        biomero_client.timesleep.sleep = real_sleep
    appended = _events(opts["store"]) - before
    client.run(f"scancel {job_id}", hide=True)
    client.close()
    return {
        "cycles": cycles["n"],
        "events": appended,
        "events_after_cycle": per_cycle,
        "interval_s": job.slurm_polling_interval,
    }


TASKS = {
    "staging_up": staging_up,
    "staging_down": staging_down,
    "poll": poll,
    "e2e": e2e,
    "events": events,
}


def main() -> None:
    logging.disable(logging.WARNING)
    global HOME, DATA, SCRIPTS
    task, opts = sys.argv[1], json.loads(sys.argv[2])
    HOME = opts.get("home", HOME)
    DATA, SCRIPTS = f"{HOME}/bench-biomero/data", f"{HOME}/bench-biomero/slurm-scripts"
    stdout = sys.stdout
    sys.stdout = sys.stderr  # biomero prints; keep stdout for the answer
    try:
        answer = TASKS[task](opts)
    finally:
        sys.stdout = stdout
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
