"""The Slurm adapter: sbatch, sacct, squeue, scancel and sinfo over a Transport."""

from biomeroworker.slurm.client import SlurmClient
from biomeroworker.slurm.commands import SubmitRequest, after_ok
from biomeroworker.slurm.parse import JobStatus, Partition
from biomeroworker.slurm.states import JobState, parse_state

__all__ = [
    "JobState",
    "JobStatus",
    "Partition",
    "SlurmClient",
    "SubmitRequest",
    "after_ok",
    "parse_state",
]
