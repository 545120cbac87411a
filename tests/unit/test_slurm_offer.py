"""sbatch values against what the cluster offers (biomeroworker.slurm.offer)."""

from __future__ import annotations

import pytest

from biomeroworker.slurm.offer import (
    FlagValue,
    cached_partitions,
    check_flags,
    forget_partitions,
    parse_offer,
    sbatch_memory_mb,
    sbatch_time_s,
)
from biomeroworker.slurm.parse import Partition

SHORT = Partition("short", True, 3600, 1, 8, True)
LONG = Partition("long", True, None, 2, 16, False)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 5400),
        ("10:30", 630),
        ("1:00:00", 3600),
        ("2-0", 2 * 86400),
        ("1-12:30", 86400 + 12 * 3600 + 30 * 60),  # days-hours:minutes, not minutes:seconds
        ("1-00:00:01", 86401),
        ("INFINITE", None),
        ("unlimited", None),
    ],
)
def test_time_limits_are_read_as_sbatch_reads_them(text: str, seconds: int | None) -> None:
    assert sbatch_time_s(text) == seconds


@pytest.mark.parametrize("text", ["", "1h", "1:2:3:4", "-5", "1.5", "1-", "soon"])
def test_unreadable_time_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected minutes"):
        sbatch_time_s(text)


@pytest.mark.parametrize(
    ("text", "mb"), [("1000", 1000), ("16G", 16384), ("1gb", 1024), ("512K", 0.5), ("1T", 1048576)]
)
def test_memory_is_read_as_sbatch_reads_it(text: str, mb: float) -> None:
    assert sbatch_memory_mb(text) == mb


@pytest.mark.parametrize("text", ["1.5G", "lots", "16 G", "-1G", "16X"])
def test_memory_sbatch_refuses_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="whole number"):
        sbatch_memory_mb(text)


def _values(**flags: str) -> list[FlagValue]:
    return [FlagValue(k.replace("_", "-"), v, f"key {k}") for k, v in flags.items()]


def test_values_that_fit_pass() -> None:
    assert check_flags(_values(partition="short", time="59:00", mem="4G"), [SHORT, LONG]) == []


def test_a_partition_list_is_checked_name_by_name() -> None:
    (problem,) = check_flags(_values(partition="short,nope"), [SHORT, LONG])
    assert problem == "key partition: partition 'nope' does not exist on the cluster; " + (
        "partitions: short, long"
    )


def test_without_a_partition_the_default_partition_limits_apply() -> None:
    (problem,) = check_flags(_values(time="2:00:00"), [SHORT, LONG])
    assert "partition short (the cluster's default) allows" in problem


def test_infinite_time_on_a_limited_partition_is_refused() -> None:
    assert check_flags(_values(partition="short", time="INFINITE"), [SHORT])
    assert check_flags(_values(partition="long", time="INFINITE"), [LONG]) == []


def test_more_cpus_than_the_partition_has_is_refused() -> None:
    (problem,) = check_flags(_values(partition="short", cpus_per_task="9"), [SHORT])
    assert (
        problem == "key cpus_per_task: cpus-per-task 9 is more than the 8 CPUs of partition short"
    )


@pytest.mark.parametrize(
    ("flag", "value"),
    [("gres", "gpu:"), ("gres", "gpu:a100:two"), ("gpus", "two"), ("ntasks", "0"), ("nodes", "x")],
)
def test_badly_written_gpu_and_cpu_values_are_refused(flag: str, value: str) -> None:
    (problem,) = check_flags([FlagValue(flag, value, "k")], None)
    assert problem.startswith(f"k: {value!r} is not usable")


@pytest.mark.parametrize(("flag", "value"), [("gres", "gpu:1"), ("gres", "gpu:a100:2,mps:10")])
def test_well_written_gres_passes(flag: str, value: str) -> None:
    assert check_flags([FlagValue(flag, value, "k")], None) == []


def test_partitions_are_asked_once_per_ttl() -> None:
    forget_partitions()
    calls: list[int] = []
    now = [0.0]

    def fetch() -> list[Partition]:
        calls.append(1)
        return [SHORT]

    for _ in range(3):
        assert cached_partitions("c", fetch, ttl_s=60, clock=lambda: now[0]) == [SHORT]
    now[0] = 61.0
    cached_partitions("c", fetch, ttl_s=60, clock=lambda: now[0])
    cached_partitions("other", fetch, ttl_s=60, clock=lambda: now[0])
    assert len(calls) == 3
    forget_partitions()


def test_a_failed_query_is_not_cached() -> None:
    forget_partitions()

    def broken() -> list[Partition]:
        raise RuntimeError("down")

    with pytest.raises(RuntimeError):
        cached_partitions("c", broken)
    assert cached_partitions("c", lambda: [LONG]) == [LONG]
    forget_partitions()


def test_a_partition_list_with_spaces_is_refused_as_sbatch_would_read_it() -> None:
    (problem,) = check_flags(_values(partition="short, long"), [SHORT, LONG])
    assert "partition ' long' does not exist" in problem


# -- what the nodes offer: memory and GRES (one extended sinfo) ---------------------

# Real sinfo output of a cluster with two kinds of node in "gpu" (sinfo prints the
# partition once per kind) and none in "cpu".
SINFO_OFFER = (
    "cpu*|up|2:00:00|4|0/32/0/32|64000|(null)\n"
    "gpu|up|1-00:00:00|2|0/16/0/16|128000+|gpu:a100:4(S:0-1)\n"
    "gpu|up|1-00:00:00|1|0/8/0/8|96000|gpu:v100:2,mps:100\n"
)


def test_sinfo_offer_merges_a_partition_printed_once_per_kind_of_node() -> None:
    offer = parse_offer(SINFO_OFFER)
    gpu = {p.name: p for p in offer.partitions}["gpu"]
    assert (gpu.nodes, gpu.cpus, gpu.time_limit_s) == (3, 24, 86400)
    node = offer.nodes["gpu"]
    assert node.memory_mb == 128000 and node.gres == {"gpu": 4, "mps": 100}
    assert node.gres_types["gpu"] == {"a100", "v100"}
    assert offer.nodes["cpu"].gres == {}


def _offer_problems(**flags: str) -> list[str]:
    return check_flags(_values(**flags), parse_offer(SINFO_OFFER))


def test_memory_above_the_largest_node_is_refused() -> None:
    (problem,) = _offer_problems(partition="cpu", mem="100G")
    assert problem == (
        "key mem: mem 100G is more than the 64000 MB the largest node of partition cpu has"
    )
    assert _offer_problems(partition="gpu", mem="100G") == []


def test_a_gpu_request_on_a_partition_without_gpus_is_refused_with_what_it_has() -> None:
    (problem,) = _offer_problems(partition="cpu", gres="gpu:1")
    assert problem == "key gres: partition cpu has no gpu (GRES: none)"
    (problem,) = _offer_problems(gpus="1")  # the default partition is cpu
    assert problem == "key gpus: partition cpu (the cluster's default) has no GPUs (GRES: none)"


def test_a_gpu_type_or_count_the_nodes_lack_is_refused() -> None:
    assert _offer_problems(partition="gpu", gres="gpu:a100:4") == []
    (problem,) = _offer_problems(partition="gpu", gres="gpu:h100:1")
    assert problem == "key gres: partition gpu has no gpu of type h100 (a100, v100)"
    (problem,) = _offer_problems(partition="gpu", gres="gpu:8")
    assert problem == "key gres: gpu:8 is more than the 4 a node of partition gpu has"


def test_unreadable_offer_output_is_a_slurm_error() -> None:
    from biomeroworker.errors import SlurmError

    with pytest.raises(SlurmError):
        parse_offer("cpu|up|2:00:00\n")


def test_one_extended_sinfo_over_ssh_and_the_partitions_alone_over_rest() -> None:
    from biomeroworker.slurm.offer import ClusterOffer, offer_argv, read_offer

    class Result:
        stdout = SINFO_OFFER

    class Transport:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def run(self, argv: list[str], **_: object) -> Result:
            self.calls.append(argv)
            return Result()

    class SSHClient:
        command_timeout_s = 5.0

        def __init__(self) -> None:
            self.transport = Transport()

    client = SSHClient()
    offer = read_offer(client)
    assert client.transport.calls == [offer_argv()]
    assert offer.nodes["gpu"].gres["gpu"] == 4

    class RestClient:  # slurmrestd: no transport, no node details
        def partitions(self) -> list[Partition]:
            return [SHORT]

    assert read_offer(RestClient()) == ClusterOffer((SHORT,))
