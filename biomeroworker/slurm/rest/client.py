"""RestSlurmClient: SlurmClient's operations through slurmrestd, same answers.

A poll is one ``GET /slurm/<v>/jobs`` while the controller remembers the jobs (it
forgets them MinJobAge after they end). Jobs it does not know, arrays it lists fewer
elements of than expected, and jobs it saw killed by signal 9 (possibly over their
memory, which only accounting can tell) are looked up with one more
``GET /slurmdb/<v>/jobs?step=<ids>`` (``slurm.settle``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import requests

from biomeroworker.errors import SlurmError
from biomeroworker.slurm.commands import SubmitRequest, check_value, unique_job_ids
from biomeroworker.slurm.parse import JobStatus, Partition, answer, array_parents
from biomeroworker.slurm.rest import request as rest_request
from biomeroworker.slurm.rest import shapes
from biomeroworker.slurm.rest.errors import RestAuthError, RestUnavailable
from biomeroworker.slurm.rest.token import TokenSource
from biomeroworker.slurm.settle import combine, unsettled
from biomeroworker.slurm.states import JobState
from biomeroworker.transport.base import Transport

log = logging.getLogger(__name__)

# Slurm error numbers (slurm_errno.h) with a meaning for us.
AUTH_ERRORS = frozenset({1007})  # SLURM_PROTOCOL_AUTHENTICATION_ERROR
GONE_ERRORS = frozenset({2017, 2021})  # ESLURM_INVALID_JOB_ID, ESLURM_ALREADY_DONE
NOTHING_FOUND = frozenset({9003})  # slurmdbd: an empty answer is reported as an error
DB_DOWN = frozenset({7000})  # ESLURM_DB_CONNECTION: slurmrestd cannot reach slurmdbd
DEFAULT_ENVIRONMENT: Mapping[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


class RestApi:
    """One slurmrestd: base URL, API version, user and token; JSON in and out.

    Every call goes through ``call``: it logs, times, counts, renews the token once
    after a refusal, and turns HTTP and Slurm errors into typed exceptions.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str,
        tokens: TokenSource,
        version: str = "v0.0.38",
        timeout_s: float = 30.0,
        verify_tls: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.tokens = tokens
        self.shape = shapes.shape_for(version)
        self.timeout_s = timeout_s
        self.verify_tls = verify_tls
        self.requests_made = 0
        self._session = requests.Session()

    @property
    def version(self) -> str:
        return self.shape.version

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        idempotent: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body). Raises RestAuthError for a refused token,
        RestUnavailable when the server cannot be reached; other errors are returned
        for the caller to judge (slurmrestd answers 500 for "no such job")."""
        renewed = False
        retried = False
        while True:
            try:
                status, data = self._send(method, path, params, body)
            except RestUnavailable:
                if not idempotent or retried:
                    raise
                retried = True
                continue
            refused = status in (401, 403) or AUTH_ERRORS & shapes.error_numbers(data)
            if not refused:
                return status, data
            if renewed:
                raise RestAuthError(
                    f"slurmrestd refused the token for user {self.user!r} "
                    f"(HTTP {status}: {shapes.error_text(data)}); check [REST] user and "
                    "that the token was issued for that user by this cluster"
                )
            self.tokens.invalidate()
            renewed = True

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {
            "X-SLURM-USER-NAME": self.user,
            "X-SLURM-USER-TOKEN": self.tokens.token(),
            "Accept": "application/json",
        }
        started = time.monotonic()
        self.requests_made += 1
        try:
            response = self._session.request(
                method,
                f"{self.url}/{path.lstrip('/')}",
                params=params,
                json=body,
                headers=headers,
                timeout=self.timeout_s,
                verify=self.verify_tls,
            )
        except requests.Timeout as exc:
            waited = f"{self.timeout_s:g} s"
            raise RestUnavailable(f"slurmrestd at {self.url}: no answer in {waited}") from exc
        except requests.RequestException as exc:
            raise RestUnavailable(f"slurmrestd at {self.url} not reachable: {exc}") from exc
        elapsed = time.monotonic() - started
        log.debug("rest: %s %s -> %s in %.3f s", method, path, response.status_code, elapsed)
        try:
            data = response.json()
        except ValueError:
            text = response.text.strip()[:200]
            data = {"errors": [{"description": text or f"HTTP {response.status_code}"}]}
        if not isinstance(data, dict):
            data = {"errors": [{"description": f"unexpected answer: {str(data)[:200]}"}]}
        return response.status_code, data

    def close(self) -> None:
        self._session.close()


class RestSlurmClient:
    """submit / poll / cancel / partitions like SlurmClient, over slurmrestd.

    ``files`` reads the job script (sbatch reads it on the cluster; REST sends its
    text) and, when ``home`` is not given, tells the user's cluster home once, against
    which relative paths are made absolute.
    """

    def __init__(
        self,
        api: RestApi,
        *,
        files: Transport | None = None,
        home: str | None = None,
        environment: Mapping[str, str] = DEFAULT_ENVIRONMENT,
    ) -> None:
        self.api = api
        self.files = files
        self._home = home
        self.environment = dict(environment)

    @property
    def requests_made(self) -> int:
        return self.api.requests_made

    @property
    def home(self) -> str:
        if self._home is None:
            if self.files is None:
                raise SlurmError("[REST] home is not set and no transport can tell it")
            result = self.files.run(["printenv", "HOME"], idempotent=True)
            self._home = result.stdout.strip()
            if not self._home.startswith("/"):
                raise SlurmError(f"cluster home is not an absolute path: {self._home!r}")
        return self._home

    def _path(self, version_path: str) -> str:
        return version_path.replace("<v>", self.api.version)

    def submit(
        self,
        request: SubmitRequest,
        *,
        script: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> str:
        """Submit and return the job id. The script text is read from
        ``request.script_path`` unless given. Not retried: a retry could submit twice."""
        env = {**self.environment, **(environment or {})}
        shape = self.api.shape
        props = rest_request.job_properties(shape, request, home=self.home, environment=env)
        if script is None:
            if self.files is None:
                raise SlurmError("no transport to read the job script from; pass script=")
            script = self.files.read_text(request.script_path)
        script = rest_request.script_with_arguments(
            script, request.script_args, request.script_path
        )
        body = rest_request.submit_body(shape, script=script, properties=props)
        _, data = self.api.call("POST", self._path("slurm/<v>/job/submit"), body=body)
        job_id = shapes.submitted_job_id(data)
        if data.get("errors"):
            log.info("job %s submitted with a note: %s", job_id, shapes.error_text(data))
        return job_id

    def poll(
        self, job_ids: Iterable[str], expected: Mapping[str, int] | None = None
    ) -> dict[str, JobStatus]:
        """Status of every job and array element of ``job_ids``; see the module text
        for how many requests that takes (``expected``: element counts of arrays, as
        SlurmClient.poll). Ids nobody knows come back UNKNOWN."""
        ids = unique_job_ids(job_ids)
        if not ids:
            return {}
        now = datetime.now()
        found = self._ctld(now)
        if found is None:
            found = self._db(array_parents(ids), now)
            return answer(ids, found or {}, listed_by="none" if found is None else "slurmdbd")
        known = answer(ids, found, listed_by="slurmrestd")
        asked = unsettled(ids, known, expected or {}, _maybe_memory_kill)
        if not asked:
            return known
        extra = self._db(array_parents(asked), now)
        return combine(known, asked, extra, accounting_name="slurmdbd", confirm=_maybe_memory_kill)

    def accounting(self, job_ids: Iterable[str]) -> dict[str, JobStatus] | None:
        """What slurmdbd alone says about ``job_ids``, or None when it cannot answer."""
        ids = unique_job_ids(job_ids)
        if not ids:
            return {}
        found = self._db(array_parents(ids), datetime.now())
        return None if found is None else answer(ids, found, listed_by="slurmdbd")

    def _ctld(self, now: datetime) -> dict[str, JobStatus] | None:
        status, data = self.api.call("GET", self._path("slurm/<v>/jobs"), idempotent=True)
        if status != 200 or data.get("errors"):
            log.warning("slurmctld query failed (%s), asking slurmdbd", shapes.error_text(data))
            return None
        return shapes.ctld_jobs(self.api.shape, data, now=now)

    def _db(self, ids: list[str], now: datetime) -> dict[str, JobStatus] | None:
        query = {"step": ",".join(ids)}
        status, data = self.api.call(
            "GET", self._path("slurmdb/<v>/jobs"), params=query, idempotent=True
        )
        if status != 200:
            log.warning("slurmdbd jobs query failed: %s", shapes.error_text(data))
            return None
        # An empty answer carries the error "Nothing found"; the jobs list still decides.
        return shapes.db_jobs(self.api.shape, data, now=now)

    def cancel(self, job_ids: Iterable[str]) -> None:
        """Cancel jobs or array elements, one DELETE each (the API has no list form).
        A job that already ended, or that Slurm forgot, is not an error."""
        for job_id in unique_job_ids(job_ids):
            status, data = self.api.call(
                "DELETE", self._path(f"slurm/<v>/job/{job_id}"), idempotent=True
            )
            numbers = shapes.error_numbers(data)
            if status != 200 and not numbers & GONE_ERRORS:
                raise SlurmError(f"cancel {job_id} failed: {shapes.error_text(data)}")

    def find_by_name(self, name: str) -> list[str]:
        """Ids of jobs named ``name`` (array parents once), oldest first.

        Used to adopt a job whose id was never recorded (a crash between the submit
        and its bookkeeping), as SlurmClient.find_by_name does with squeue and sacct:
        the controller's job list (one GET, names matched here), else accounting for
        the last 7 days (``job_name`` filter, matched here again). A query that fails
        raises: "not found" must never be guessed, or a job would run twice.
        """
        check_value("job-name", name)
        status, data = self.api.call("GET", self._path("slurm/<v>/jobs"), idempotent=True)
        if status != 200 or data.get("errors"):
            raise SlurmError(f"listing jobs to find {name!r} failed: {shapes.error_text(data)}")
        found = shapes.ids_named(data, name)
        if found:
            return found
        query = {"job_name": name, "start_time": "now-7days"}
        status, data = self.api.call(
            "GET", self._path("slurmdb/<v>/jobs"), params=query, idempotent=True
        )
        numbers = shapes.error_numbers(data)
        if numbers & DB_DOWN:
            # Transient (the supervisor waits and asks again), and never "not found".
            raise RestUnavailable(
                f"looking up jobs named {name!r}: slurmdbd is not reachable from slurmrestd "
                f"({shapes.error_text(data)})"
            )
        if status != 200 or numbers - NOTHING_FOUND:
            raise SlurmError(
                f"looking up jobs named {name!r} in accounting failed: {shapes.error_text(data)}"
            )
        return shapes.ids_named(data, name)

    def partitions(self) -> list[Partition]:
        status, data = self.api.call("GET", self._path("slurm/<v>/partitions"), idempotent=True)
        if status != 200:
            raise SlurmError(f"partitions query failed: {shapes.error_text(data)}")
        return shapes.partitions(self.api.shape, data)

    def close(self) -> None:
        self.api.close()


def _maybe_memory_kill(status: JobStatus) -> bool:
    return status.state in (JobState.FAILED, JobState.CANCELLED) and status.signal == 9
