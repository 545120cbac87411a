"""What the cluster offers (its partitions, from one cached query) and whether a run's
sbatch values fit it.

Checked here, cheaply, from what one ``sinfo`` (or slurmrestd) reports per partition: the
partition exists, the time limit is written the way sbatch reads it and is not above the
partition's MaxTime, memory and GPU values are written the way sbatch reads them, a CPU
count is not above what the partition has and, where ``sinfo`` tells (not over REST),
``mem`` is not above its largest node's memory and a GRES or GPU request names a GRES its
nodes have, in a count one node holds. With ``EnforcePartLimits=NO`` (Slurm's
default) sbatch accepts a job above MaxTime and it then pends forever, so the time check
is the one that saves users most.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from biomeroworker.errors import SlurmError
from biomeroworker.slurm.parse import Partition, parse_sinfo

PARTITIONS_TTL_S = 60.0

_UNLIMITED = frozenset({"infinite", "unlimited"})
# sbatch --time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_TIME = re.compile(
    r"(?:(?P<d>[0-9]+)-(?P<dh>[0-9]+)(?::(?P<dm>[0-9]+)(?::(?P<ds>[0-9]+))?)?)"
    r"|(?:(?P<a>[0-9]+)(?::(?P<b>[0-9]+)(?::(?P<c>[0-9]+))?)?)"
)
# sbatch --mem / --mem-per-cpu / --mem-per-gpu: whole number, optional K/M/G/T (and B).
_MEMORY = re.compile(r"(?P<n>[0-9]+)(?:(?P<unit>[KMGT])B?)?", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
# --gres: name[:type][:count], comma separated; --gpus: [type:]count
_GRES = re.compile(r"[a-z][a-z0-9_-]*(?::[A-Za-z0-9_.-]+)?(?::[0-9]+)?", re.IGNORECASE)
_GPUS = re.compile(r"(?:[A-Za-z0-9_.-]+:)?[0-9]+")
_WHOLE = re.compile(r"[0-9]+")
_NODES = re.compile(r"[0-9]+(?:-[0-9]+)?")
_CPU_FLAGS = ("cpus-per-task", "ntasks", "ntasks-per-node", "cpus-per-gpu")


@dataclass(frozen=True)
class NodeOffer:
    """What the largest node of a partition has: memory (MB) and GRES name -> count."""

    memory_mb: int | None = None
    gres: Mapping[str, int] = field(default_factory=dict)
    gres_types: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterOffer:
    """The partitions, and per partition what its nodes offer (empty when unknown)."""

    partitions: tuple[Partition, ...]
    nodes: Mapping[str, NodeOffer] = field(default_factory=dict)


# partition, availability, time limit, nodes, CPUs A/I/O/T, memory per node (MB), GRES
OFFER_FORMAT = "%P|%a|%l|%D|%C|%m|%G"


def offer_argv() -> list[str]:
    return ["sinfo", "--noheader", f"--format={OFFER_FORMAT}"]


def _gres_items(text: str) -> list[tuple[str, str | None, int]]:
    """``gpu:a100:4(S:0-1),mps:100`` -> [("gpu", "a100", 4), ("mps", None, 100)];
    a GRES without a count counts 1 (sbatch reads ``--gres=gpu`` so)."""
    items = []
    for raw in text.split(","):
        item = raw.split("(", 1)[0].strip()
        if not item or item == "null":
            continue
        name, *rest = item.split(":")
        count = int(rest.pop()) if rest and rest[-1].isdigit() else 1
        items.append((name, rest[0] if rest else None, count))
    return items


def parse_offer(stdout: str) -> ClusterOffer:
    """Read ``offer_argv()`` output; sinfo prints a partition once per kind of node."""
    merged: dict[str, Partition] = {}
    nodes: dict[str, NodeOffer] = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 7:
            raise SlurmError(f"sinfo: expected 7 fields, got {len(fields)}: {line[:200]!r}")
        (part,) = parse_sinfo("|".join(fields[:5]))
        seen = merged.get(part.name)
        if seen is not None:
            part = Partition(
                part.name,
                part.available or seen.available,
                part.time_limit_s,
                part.nodes + seen.nodes,
                part.cpus + seen.cpus,
                part.default or seen.default,
            )
        merged[part.name] = part
        node = nodes.get(part.name, NodeOffer())
        memory = fields[5].strip().rstrip("+")
        gres, types = dict(node.gres), {k: set(v) for k, v in node.gres_types.items()}
        for name, kind, count in _gres_items(fields[6]):
            gres[name] = max(gres.get(name, 0), count)
            types.setdefault(name, set()).update({kind} if kind else set())
        nodes[part.name] = NodeOffer(
            max(node.memory_mb or 0, int(memory)) if memory.isdigit() else node.memory_mb,
            gres,
            {k: frozenset(v) for k, v in types.items()},
        )
    return ClusterOffer(tuple(merged.values()), nodes)


def read_offer(slurm: Any) -> ClusterOffer:
    """One query: the extended ``sinfo`` through a SlurmClient's transport, or, for a
    client without one (slurmrestd), its partitions alone."""
    transport = getattr(slurm, "transport", None)
    if transport is None:
        return ClusterOffer(tuple(slurm.partitions()))
    timeout = getattr(slurm, "command_timeout_s", 60.0)
    result = transport.run(offer_argv(), timeout_s=timeout, idempotent=True)
    return parse_offer(result.stdout)


def sbatch_time_s(text: str) -> int | None:
    """sbatch ``--time`` to seconds; None for INFINITE/UNLIMITED. ValueError if unreadable."""
    text = text.strip()
    if text.lower() in _UNLIMITED:
        return None
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(
            "expected minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (or INFINITE)"
        )
    g = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    if "d" in g:
        return ((g["d"] * 24 + g["dh"]) * 60 + g.get("dm", 0)) * 60 + g.get("ds", 0)
    if "c" in g:  # H:M:S
        return (g["a"] * 60 + g["b"]) * 60 + g["c"]
    return g["a"] * 60 + g.get("b", 0)  # M or M:S


def sbatch_memory_mb(text: str) -> float:
    """sbatch ``--mem`` to megabytes: a whole number, bare (MB) or with K, M, G or T."""
    match = _MEMORY.fullmatch(text.strip())
    if match is None:
        raise ValueError("expected a whole number with an optional unit K, M, G or T, e.g. 16G")
    return int(match["n"]) * _MB_PER_UNIT[(match["unit"] or "M").upper()]


def format_limit(seconds: int | None) -> str:
    if seconds is None:
        return "unlimited"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    clock = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def _format_problem(flag: str, value: str) -> str | None:
    """What is wrong with how ``value`` is written for ``--flag``, if anything."""
    try:
        if flag == "time":
            sbatch_time_s(value)
        elif flag in ("mem", "mem-per-cpu", "mem-per-gpu"):
            sbatch_memory_mb(value)
    except ValueError as exc:
        return str(exc)
    if flag == "gres" and not all(_GRES.fullmatch(item) for item in value.split(",")):
        return "expected name[:type][:count] (comma separated), e.g. gpu:1 or gpu:a100:2"
    if flag in ("gpus", "gpus-per-node", "gpus-per-task") and not _GPUS.fullmatch(value):
        return "expected [type:]count, e.g. 1 or a100:2"
    if flag in _CPU_FLAGS and not (_WHOLE.fullmatch(value) and int(value) > 0):
        return "expected a whole number > 0"
    if flag == "nodes" and not _NODES.fullmatch(value):
        return "expected a node count or min-max, e.g. 1 or 1-2"
    return None


@dataclass(frozen=True)
class FlagValue:
    """One sbatch value and the key (or option) it came from, for messages."""

    flag: str
    value: str
    origin: str


def check_flags(
    values: Sequence[FlagValue], offered: ClusterOffer | Sequence[Partition] | None
) -> list[str]:
    """One line per problem with ``values``; ``offered`` None checks the format only.

    Without a partition value the cluster's default partition is the one checked.
    """
    problems = []
    if offered is not None and not isinstance(offered, ClusterOffer):
        offered = ClusterOffer(tuple(offered))
    partitions = offered.partitions if offered is not None else None
    by_flag = {v.flag: v for v in values}
    for item in values:
        bad = _format_problem(item.flag, item.value)
        if bad:
            problems.append(f"{item.origin}: {item.value!r} is not usable: {bad}")
    if partitions is None:
        return problems
    known = {p.name: p for p in partitions}
    names = ", ".join(p.name for p in partitions) or "none"
    chosen = by_flag.get("partition")
    if chosen is not None:
        wanted = chosen.value.split(",")  # as sbatch reads it: no spaces around names
        missing = [name for name in wanted if name not in known]
        if missing:
            problems.append(
                f"{chosen.origin}: partition {', '.join(repr(m) for m in missing)} does not "
                f"exist on the cluster; partitions: {names}"
            )
        targets = [known[name] for name in wanted if name in known]
    else:
        targets = [p for p in partitions if p.default]
    for partition in targets:
        problems += _fits(partition, by_flag, chosen)
        node = offered.nodes.get(partition.name) if offered is not None else None
        if node is not None:
            problems += _fits_nodes(partition.name, node, by_flag, chosen)
    return problems


def _fits(
    partition: Partition, by_flag: Mapping[str, FlagValue], chosen: FlagValue | None
) -> list[str]:
    problems = []
    where = f"partition {partition.name}" + ("" if chosen else " (the cluster's default)")
    limit = by_flag.get("time")
    if limit is not None and _format_problem("time", limit.value) is None:
        wanted = sbatch_time_s(limit.value)
        most = partition.time_limit_s
        if most is not None and (wanted is None or wanted > most):
            problems.append(
                f"{limit.origin}: time {limit.value} is above the {format_limit(most)} "
                f"that {where} allows"
            )
    for flag in _CPU_FLAGS[:2]:
        item = by_flag.get(flag)
        too_many = item is not None and _WHOLE.fullmatch(item.value) and partition.cpus
        if item is not None and too_many and int(item.value) > partition.cpus:
            problems.append(
                f"{item.origin}: {flag} {item.value} is more than the {partition.cpus} "
                f"CPUs of {where}"
            )
    return problems


def _fits_nodes(
    name: str, node: NodeOffer, by_flag: Mapping[str, FlagValue], chosen: FlagValue | None
) -> list[str]:
    problems = []
    where = f"partition {name}" + ("" if chosen else " (the cluster's default)")
    mem = by_flag.get("mem")
    if mem is not None and node.memory_mb and _format_problem("mem", mem.value) is None:
        wanted = sbatch_memory_mb(mem.value)
        if wanted > node.memory_mb:
            problems.append(
                f"{mem.origin}: mem {mem.value} is more than the {node.memory_mb} MB "
                f"the largest node of {where} has"
            )
    offered = ", ".join(f"{k}:{v}" for k, v in sorted(node.gres.items())) or "none"
    gres = by_flag.get("gres")
    if gres is not None and _format_problem("gres", gres.value) is None:
        for gname, kind, count in _gres_items(gres.value):
            types = node.gres_types.get(gname, frozenset())
            if gname not in node.gres:
                problems.append(f"{gres.origin}: {where} has no {gname} (GRES: {offered})")
            elif kind and types and kind not in types:
                listed = ", ".join(sorted(types))
                problems.append(f"{gres.origin}: {where} has no {gname} of type {kind} ({listed})")
            elif count > node.gres[gname]:
                problems.append(
                    f"{gres.origin}: {gname}:{count} is more than the {node.gres[gname]} a "
                    f"node of {where} has"
                )
    for flag in ("gpus", "gpus-per-node", "gpus-per-task"):
        item = by_flag.get(flag)
        if item is not None and _GPUS.fullmatch(item.value) and "gpu" not in node.gres:
            problems.append(f"{item.origin}: {where} has no GPUs (GRES: {offered})")
    return problems


# ---------------------------------------------------------------- the cached query


@dataclass
class _Entry:
    at: float
    offer: Any


_CACHE: dict[str, _Entry] = {}
_LOCK = threading.Lock()


def cached_partitions(
    key: str,
    fetch: Callable[[], Any],
    *,
    ttl_s: float = PARTITIONS_TTL_S,
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """What ``fetch`` says the cluster ``key`` names offers (a ClusterOffer, or a list of
    partitions): one query per ``ttl_s`` per process. A failed query is not cached."""
    with _LOCK:
        entry = _CACHE.get(key)
        now = clock()
        if entry is not None and now - entry.at < ttl_s:
            return entry.offer
        offer = fetch()
        _CACHE[key] = _Entry(now, offer)
        return offer


def forget_partitions() -> None:
    """Drop every cached answer (tests; after the admin changed the cluster)."""
    with _LOCK:
        _CACHE.clear()
