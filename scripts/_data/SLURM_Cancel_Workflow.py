"""BIOMERO: Cancel Workflow - stop one of your runs (scancel its jobs, mark it cancelled)."""

from __future__ import annotations

import omero.scripts as scripts

from biomeroworker.omero import actions, forms, scripting

VERSION = "1.0.0"


def main() -> None:
    catalog = forms.load_catalog()
    client = scripts.client(
        "Cancel Workflow",
        "Cancel one of your runs: its Slurm jobs are cancelled and nothing is imported.",
        scripts.String(forms.WORKFLOW_UUID, optional=False, grouping="01", description="Run id"),
        scripts.String("Reason", optional=True, grouping="02", description="Why (optional)"),
        version=VERSION,
        authors=["BIOMERO worker"],
    )

    def action(conn, inputs):  # type: ignore[no-untyped-def]
        with scripting.tracker_for(catalog) as tracker:
            return actions.cancel(
                tracker,
                actions.user_of(conn),
                inputs[forms.WORKFLOW_UUID],
                scripting.engine_cancel(catalog, tracker),
                inputs.get("Reason") or "",
            )

    scripting.serve(client, action)


if __name__ == "__main__":
    main()
