"""The exceptions the package raises, one small tree.

Every error a user can cause or fix says what to do; programming errors are left to
raise as ordinary Python exceptions.
"""

from __future__ import annotations


class BiomeroError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(BiomeroError):
    """slurm-config.ini (or an environment override) is wrong.

    ``problems`` holds one line per problem, each naming file, section and key.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class TransportError(BiomeroError):
    """A command or file transfer could not reach the cluster or failed there."""


class ConnectError(TransportError):
    """The cluster could not be reached (DNS, refused, auth, dropped socket)."""


class HostKeyError(ConnectError):
    """The server's host key is unknown or does not match known_hosts."""


class CommandTimeout(TransportError):
    """A remote command did not finish within its timeout."""

    def __init__(self, argv: list[str], timeout_s: float) -> None:
        self.argv = argv
        self.timeout_s = timeout_s
        super().__init__(f"command timed out after {timeout_s:g} s: {argv[0] if argv else '?'}")


class StreamStalled(TransportError):
    """A stream moved no bytes, in either direction, for its inactivity limit."""

    def __init__(self, argv: list[str], idle_s: float) -> None:
        self.argv = argv
        self.idle_s = idle_s
        super().__init__(
            f"{argv[0] if argv else '?'} stalled: no data moved for {idle_s:g} s "
            f"([WORKER] transfer_idle_timeout_s); the link or the far side stopped"
        )


class AccountingUnavailable(TransportError):
    """Slurm's accounting (slurmdbd) could not answer a question only it can answer:
    a service that is away, so waiting is right; never read as "no such job"."""


class CommandError(TransportError):
    """A command ran and exited non-zero."""

    def __init__(self, argv: list[str], exit_code: int, stdout: str, stderr: str) -> None:
        self.argv = argv
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        tail = (stderr or stdout).strip().splitlines()[-3:]
        detail = " | ".join(tail) if tail else "no output"
        super().__init__(f"{' '.join(argv[:2])} exited {exit_code}: {detail}")


class SlurmError(BiomeroError):
    """Slurm refused a request or answered with something we cannot read."""


class CredentialsRefused(SlurmError):
    """The cluster refused who we are (a token), or we had no token to show: the request
    itself was never judged, so a step that met this failed an attempt, not its job."""
