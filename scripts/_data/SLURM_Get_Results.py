"""BIOMERO: Get Results - import a finished run's results again, or list what it imported.

Safe to repeat: results already in OMERO are found by their provenance and skipped.
"""

from __future__ import annotations

import omero.scripts as scripts

from biomeroworker.omero import actions, forms, scripting

VERSION = "1.0.0"


def main() -> None:
    catalog = forms.load_catalog()
    client = scripts.client(
        "Slurm Get Results",
        "Import the results of one of your finished runs (again) into OMERO.",
        scripts.String(forms.WORKFLOW_UUID, optional=False, grouping="01", description="Run id"),
        version=VERSION,
        authors=["BIOMERO worker"],
    )

    def action(conn, inputs):  # type: ignore[no-untyped-def]
        with scripting.tracker_for(catalog) as tracker:
            return actions.get_results(
                conn, tracker, inputs[forms.WORKFLOW_UUID], scripting.results_dir
            )

    scripting.serve(client, action)


if __name__ == "__main__":
    main()
