"""BIOMERO: Workflow Status - your runs, their state and progress (from the read models)."""

from __future__ import annotations

import omero.scripts as scripts

from biomeroworker.omero import actions, forms, scripting

VERSION = "1.0.0"


def main() -> None:
    catalog = forms.load_catalog()
    client = scripts.client(
        "Workflow Status",
        "Your workflow runs with their state and step; give a run id for its steps and jobs.",
        scripts.String(
            forms.WORKFLOW_UUID, optional=True, grouping="01", description="One run (optional)"
        ),
        scripts.Long("Limit", optional=True, grouping="02", default=20, min=1, max=500),
        version=VERSION,
        authors=["BIOMERO worker"],
    )

    def action(conn, inputs):  # type: ignore[no-untyped-def]
        with scripting.tracker_for(catalog) as tracker:
            user = actions.user_of(conn)
            return actions.status(
                tracker, user, inputs.get(forms.WORKFLOW_UUID), int(inputs.get("Limit") or 20)
            )

    scripting.serve(client, action)


if __name__ == "__main__":
    main()
