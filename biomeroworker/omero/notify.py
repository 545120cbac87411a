"""E-mail the user when a run ends, through OMERO's own mail (``omero.mail.*`` on the server).

A user asks with the Run Workflow input ``E-mail`` (as upstream); the script records the
address of the user's OMERO profile in the run's inputs as ``notify_email``. When the
supervisor sees a run it held leave the active runs (completed, failed or cancelled), it
calls the run's DataSide ``run_ended``; for OMERO runs that sends one message with
``omero.cmd.SendEmailRequest`` over the worker's admin session (the server allows only
admins to send mail). The request names the user by id, never only an address: a
request without user or group ids would go to every active user.

Best effort, as upstream's Slurm mail is: a server without mail settings, or a run that
ends while no supervisor holds it, sends nothing; the run's outcome never depends on it.
"""

from __future__ import annotations

import logging
from typing import Any

from biomeroworker.errors import BiomeroError
from biomeroworker.run_record import RunRecord

log = logging.getLogger(__name__)


def wants_mail(run: RunRecord) -> bool:
    return bool(run.finished and run.inputs.notify_email and run.omero_user_id is not None)


def message(run: RunRecord) -> tuple[str, str]:
    """(subject, body) for a finished run."""
    state = run.state.lower()
    subject = f"BIOMERO: {run.workflow} {run.version} {state} (run {run.run_id})"
    lines = [
        f"Your workflow run {run.run_id} ({run.workflow} {run.version}) is {state}.",
    ]
    if run.error:
        lines.append(f"Error ({run.error_type or 'error'}): {run.error}")
    if run.state == "COMPLETED":
        lines.append("Its results are in OMERO, in the group you started it from.")
    lines.append("Workflow Status in OMERO shows its steps and jobs.")
    return subject, "\n".join(lines) + "\n"


def send_run_ended(admin: Any, run: RunRecord) -> bool:
    """Send the message if the run asked for one; True when the server accepted it."""
    if not wants_mail(run) or run.omero_user_id is None:
        return False
    import omero.cmd
    from omero.rtypes import unwrap

    from biomeroworker.omero.connect import omero_errors

    subject, body = message(run)
    request = omero.cmd.SendEmailRequest(
        subject=subject,
        body=body,
        html=False,
        userIds=[run.omero_user_id],
        groupIds=[],
        extra=[],
        inactive=False,
        everyone=False,
    )
    try:
        with omero_errors(f"e-mailing the end of run {run.run_id}"):
            callback = admin.c.submit(request, loops=20, ms=500, failonerror=False)
            try:
                response = callback.getResponse()
            finally:
                callback.close(True)
    except BiomeroError as exc:
        log.warning("run %s: no e-mail sent: %s", run.run_id, exc)
        return False
    if isinstance(response, omero.cmd.ERR):
        log.warning(
            "run %s: OMERO did not send the e-mail: %s %s",
            run.run_id,
            response.name,
            unwrap(response.parameters) if hasattr(response, "parameters") else "",
        )
        return False
    log.info("run %s: e-mailed %s", run.run_id, run.inputs.notify_email)
    return True
