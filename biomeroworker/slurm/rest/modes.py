"""Which Transport stages data and which client runs Slurm, per [WORKER] transport.

ssh    data over SFTP, Slurm commands over SSH            (SlurmClient)
local  data is a local copy (or already there), commands run here (SlurmClient)
rest   Slurm through slurmrestd (RestSlurmClient); data over SSH (staging=ssh)
       or a filesystem shared with the cluster (staging=shared)
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from biomeroworker.slurm.client import SlurmClient
from biomeroworker.slurm.commands import history_start
from biomeroworker.slurm.rest.client import RestApi, RestSlurmClient
from biomeroworker.slurm.rest.token import StaticToken, TokenCommand, TokenFile, TokenSource
from biomeroworker.transport import open_transport
from biomeroworker.transport.base import Transport

if TYPE_CHECKING:
    from biomeroworker.config import RestSettings, Settings


def staging_transport(settings: Settings) -> Transport:
    """The Transport that moves run data (and, for ssh/local, runs Slurm commands)."""
    return open_transport(settings)


def token_source(rest: RestSettings) -> TokenSource:
    """token_command, else token_file, else token ($SLURM_JWT)."""
    if rest.token_command:
        return TokenCommand(shlex.split(rest.token_command), refresh_s=rest.token_refresh_s)
    if rest.token_file:
        return TokenFile(rest.token_file, refresh_s=rest.token_refresh_s)
    if rest.token:
        return StaticToken(rest.token)
    raise ValueError("no [REST] token source configured")


def slurm_client(settings: Settings, staging: Transport) -> SlurmClient | RestSlurmClient:
    """The Slurm client for ``settings``; ``staging`` reads job scripts in REST mode."""
    worker, rest = settings.worker, settings.rest
    if worker.transport != "rest":
        slurm = settings.slurm
        return SlurmClient(
            staging,
            command_timeout_s=worker.command_timeout_s,
            history_since=history_start(slurm.sacct_start_time, slurm.sacct_days_ago),
        )
    api = RestApi(
        str(rest.url),
        user=str(rest.user),
        tokens=token_source(rest),
        version=rest.api_version,
        timeout_s=rest.request_timeout_s,
        verify_tls=rest.verify_tls,
    )
    return RestSlurmClient(api, files=staging, home=rest.home)
