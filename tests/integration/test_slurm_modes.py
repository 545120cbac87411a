"""The same Slurm operations over ssh, local and rest (slurmrestd + JWT), on the real
Slurm 22.05 from localslurm/ (brought up with ``localslurm/up --rest``).

Modes: ssh = SlurmClient over SSH as hpcuser; local = SlurmClient run on this host
(as root, the shared-filesystem deployment); rest = RestSlurmClient as hpcuser, job
scripts written and read over SSH (staging=ssh).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import test_slurm_adapter as adapter
from conftest import REST_URL

from biomeroworker.slurm import JobState
from biomeroworker.slurm.rest import (
    RestApi,
    RestAuthError,
    RestSlurmClient,
    RestUnavailable,
    TokenCommand,
)
from biomeroworker.transport.base import Transport

if TYPE_CHECKING:
    from conftest import LocalCluster

pytestmark = pytest.mark.integration


MODES = ["ssh", "local", "rest"]


def rest_api(user: str, token_argv: list[str] | None = None) -> RestApi:
    argv = token_argv or ["scontrol", "token", f"username={user}", "lifespan=900"]
    return RestApi(REST_URL, user=user, tokens=TokenCommand(argv), version="v0.0.38")


class ModeBench(adapter.JobBench):
    """adapter.JobBench with the Slurm client of one mode and a call counter."""

    def __init__(self, transport: Transport, folder: str, rest_user: str | None = None) -> None:
        super().__init__(transport, folder)
        if rest_user is not None:
            self.slurm = RestSlurmClient(rest_api(rest_user), files=transport)  # type: ignore[assignment]

    def calls(self) -> int:
        """Remote commands (ssh, local) or HTTP requests (rest) made so far."""
        if isinstance(self.slurm, RestSlurmClient):
            return self.slurm.requests_made
        return self.transport.commands_run


def _open_bench(transport: Transport, rest_user: str | None = None) -> ModeBench:
    folder = transport.run(["mktemp", "-d", "-t", "biomero-modes.XXXXXX"]).stdout.strip()
    return ModeBench(transport, folder, rest_user)


def _close_bench(bench: ModeBench) -> None:
    if bench.submitted:
        bench.slurm.cancel(bench.submitted)
    bench.transport.run(["rm", "-rf", "--", bench.folder])


@pytest.fixture
def benches(
    rest_cluster: LocalCluster, ssh_transport: Transport, local_transport: Transport
) -> Iterator[dict[str, ModeBench]]:
    """One bench per mode (rest stages its scripts over SSH, like staging=ssh)."""
    made = {
        "ssh": _open_bench(ssh_transport),
        "local": _open_bench(local_transport),
        "rest": _open_bench(ssh_transport, rest_user=rest_cluster.user),
    }
    yield made
    for bench in made.values():
        _close_bench(bench)


@pytest.fixture(params=MODES)
def ops(request: pytest.FixtureRequest, benches: dict[str, ModeBench]) -> ModeBench:
    """The Slurm operations of one mode: ssh, local or rest."""
    return benches[request.param]


def test_job_completes_with_its_output(ops: ModeBench) -> None:
    job_id = ops.submit("hello", 'echo "hello from $SLURM_JOB_ID"')
    status = ops.wait([job_id], adapter.all_terminal)[job_id]
    assert (status.state, status.exit_code, status.signal) == (JobState.COMPLETED, 0, 0)
    assert status.start is not None and status.end is not None
    log = ops.transport.read_text(f"{ops.folder}/hello-{job_id}.log")
    assert log == f"hello from {job_id}\n"


def test_exported_values_reach_the_job_unchanged(ops: ModeBench) -> None:
    hostile = "a b;$(touch x) *"
    job_id = ops.submit("env", 'printf "%s" "$PARAM"', export=f"PARAM={hostile}")
    ops.wait([job_id], adapter.all_terminal)
    assert ops.transport.read_text(f"{ops.folder}/env-{job_id}.log") == hostile


def test_array_failure_shows_on_the_failing_element_only(ops: ModeBench) -> None:
    job_id = ops.submit("array", 'if [ "$SLURM_ARRAY_TASK_ID" = 2 ]; then exit 3; fi', array="1-3")
    elements = {f"{job_id}_{task}" for task in (1, 2, 3)}
    statuses = ops.wait([job_id], lambda s: set(s) == elements and adapter.all_terminal(s))
    assert {key: (s.state, s.exit_code) for key, s in statuses.items()} == {
        f"{job_id}_1": (JobState.COMPLETED, 0),
        f"{job_id}_2": (JobState.FAILED, 3),
        f"{job_id}_3": (JobState.COMPLETED, 0),
    }


def test_script_arguments_reach_every_array_element_literally(ops: ModeBench) -> None:
    # The conversion job's shape: an array, %A_%a logs, arguments. Over REST this once
    # sent "argv", which corrupted slurmrestd 22.05 (the autouse check catches that).
    args = ("list file.txt", "it's", "$(touch pwned)", "-x")
    job_id = ops.submit(
        "args", 'printf "%s|" "$@"', array="1-2", script_args=args,
        output_path=f"{ops.folder}/args-%A_%a.log",
    )  # fmt: skip
    elements = {f"{job_id}_1", f"{job_id}_2"}
    statuses = ops.wait([job_id], lambda s: set(s) == elements and adapter.all_terminal(s))
    assert {s.state for s in statuses.values()} == {JobState.COMPLETED}
    for task in (1, 2):
        assert ops.transport.read_text(f"{ops.folder}/args-{job_id}_{task}.log") == (
            "|".join(args) + "|"
        )
    assert ops.transport.run(["test", "-e", f"{ops.folder}/pwned"], check=False).exit_code == 1


def test_jobs_are_found_again_by_their_name(ops: ModeBench) -> None:
    name = f"biomero-test-find-{time.monotonic_ns()}"
    plain = ops.submit("find", "true", job_name=name, extra_flags={"hold": ""})
    array = ops.submit("finda", "true", job_name=f"{name}-a", array="1-3", extra_flags={"hold": ""})
    assert ops.slurm.find_by_name(name) == [plain]
    assert ops.slurm.find_by_name(f"{name}-a") == [array]
    assert ops.slurm.find_by_name(f"{name}-none") == []


def test_pending_array_elements_are_reported_one_by_one(ops: ModeBench) -> None:
    job_id = ops.submit("held", "true", array="1-3,7", array_throttle=1, extra_flags={"hold": ""})
    statuses = ops.wait([f"{job_id}_7", job_id], lambda s: len(s) == 4)
    assert sorted(statuses) == [f"{job_id}_{task}" for task in (1, 2, 3, 7)]
    assert {s.state for s in statuses.values()} == {JobState.PENDING}


def test_twenty_jobs_are_polled_with_one_call_per_cycle(ops: ModeBench) -> None:
    job_ids = [ops.submit(f"many{n}", "true") for n in range(20)]
    polls = 0

    def counted(statuses: adapter.Statuses) -> bool:
        nonlocal polls
        polls += 1
        return all(s.state is JobState.COMPLETED for s in statuses.values())

    before = ops.calls()
    statuses = ops.wait(job_ids, counted)
    assert ops.calls() - before == polls
    assert set(statuses) == set(job_ids)


def test_cancelled_running_job_is_cancelled(ops: ModeBench) -> None:
    job_id = ops.submit("victim", "sleep 600")
    ops.wait([job_id], lambda s: s[job_id].state is JobState.RUNNING)
    ops.slurm.cancel([job_id])
    assert ops.wait([job_id], adapter.all_terminal)[job_id].state is JobState.CANCELLED


def test_job_over_its_memory_is_out_of_memory(ops: ModeBench) -> None:
    hog = "import time; block = bytearray(300 * 1024 * 1024); time.sleep(20)"
    job_id = ops.submit("hog", f'python3 -c "{hog}"', mem="50M")
    status = ops.wait([job_id], adapter.all_terminal)[job_id]
    assert status.state is JobState.OUT_OF_MEMORY
    assert status.max_rss_bytes is not None and status.max_rss_bytes > 50 * 1024**2


def test_jobs_over_their_time_limit_are_timeout_in_every_mode(
    benches: dict[str, ModeBench],
) -> None:
    # One minute is Slurm's smallest limit; the three modes' sleepers run side by side.
    jobs = {m: b.submit("sleeper", "sleep 600", time_limit="1") for m, b in benches.items()}
    deadline = time.monotonic() + 240
    states: dict[str, Any] = {}
    while time.monotonic() < deadline:
        states = {m: benches[m].slurm.poll([j])[j].state for m, j in jobs.items()}
        if all(state.terminal for state in states.values()):
            break
        time.sleep(2)
    assert states == dict.fromkeys(MODES, JobState.TIMEOUT)


# ---------------------------------------------------------------- rest only


def test_token_signed_by_another_key_is_refused_with_a_clear_error(
    rest_cluster: LocalCluster,
) -> None:
    real = subprocess.run(
        ["scontrol", "token", f"username={rest_cluster.user}", "lifespan=300"],
        capture_output=True, text=True, check=True,
    ).stdout.strip().split("=", 1)[1]  # fmt: skip
    head, claims, _ = real.split(".")
    forged = ["echo", f"SLURM_JWT={head}.{claims}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
    client = RestSlurmClient(rest_api(rest_cluster.user, forged), home="/tmp")
    with pytest.raises(RestAuthError, match=f"refused the token for user '{rest_cluster.user}'"):
        client.poll(["1"])


def test_rest_keys_an_array_of_one_by_its_element(benches: dict[str, ModeBench]) -> None:
    # The conversion of a single OME-Zarr: slurmrestd lists the element as "<id>_1",
    # with both ids set, the shape sacct parsing gives an array element (issue 18).
    rest = benches["rest"]
    job_id = rest.submit("one", "true", array="1-1")
    statuses = rest.wait([job_id], lambda s: bool(s) and adapter.all_terminal(s))
    assert list(statuses) == [f"{job_id}_1"]
    element = statuses[f"{job_id}_1"]
    assert (element.job_id, element.array_job_id, element.array_task_id) == (
        f"{job_id}_1",
        job_id,
        1,
    )
    assert element.state is JobState.COMPLETED


def test_rest_during_an_accounting_outage_polls_the_controller_and_never_guesses_not_found(
    benches: dict[str, ModeBench], stopped_slurmdbd
) -> None:  # type: ignore[no-untyped-def]
    rest = benches["rest"]
    name = f"biomero-test-outage-{time.monotonic_ns()}"
    job_id = rest.submit("outage", "true", job_name=name)
    rest.wait([job_id], adapter.all_terminal)
    with stopped_slurmdbd():
        assert rest.slurm.poll([job_id])[job_id].state is JobState.COMPLETED
        assert rest.slurm.find_by_name(name) == [job_id]  # the controller still lists it
        # Not in the controller's list, and accounting cannot be asked: a transient
        # error (retried by the supervisor), not "no such job", which would submit again.
        with pytest.raises(RestUnavailable, match="slurmdbd is not reachable"):
            rest.slurm.find_by_name(f"{name}-elsewhere")
    assert rest.slurm.find_by_name(f"{name}-elsewhere") == []


def test_rest_asks_accounting_only_for_jobs_the_controller_does_not_know(
    benches: dict[str, ModeBench],
) -> None:
    rest = benches["rest"]
    job_id = rest.submit("done", "true")
    rest.wait([job_id], adapter.all_terminal)
    before = rest.calls()
    statuses = rest.slurm.poll([job_id, "99999999"])
    assert statuses[job_id].state is JobState.COMPLETED
    assert statuses["99999999"].state is JobState.UNKNOWN
    assert rest.calls() - before == 2  # controller, then accounting for the unknown id
