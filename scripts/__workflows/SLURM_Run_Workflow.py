"""BIOMERO: run a workflow on the Slurm cluster.

Records the request and returns; the BIOMERO worker's supervisor exports the images,
runs the job and imports the results. The form comes from slurm-config.ini and the
cached workflow descriptors only (see biomeroworker.omero.forms).
"""

from __future__ import annotations

import omero.scripts as scripts
from omero.constants.namespaces import NSDYNAMIC

from biomeroworker.omero import actions, forms, scripting, upstream

VERSION = "1.0.0"


def main() -> None:
    catalog = forms.load_catalog()
    client = scripts.client(
        "Slurm Workflow",
        forms.run_description(catalog),
        *forms.selection_inputs(),
        *forms.output_inputs(),
        *upstream.declarations(),
        *forms.wait_inputs(),
        *forms.workflow_inputs(catalog),
        namespaces=[NSDYNAMIC],
        version=VERSION,
        authors=["BIOMERO worker"],
    )

    def action(conn, inputs):  # type: ignore[no-untyped-def]
        with scripting.tracker_for(catalog) as tracker:
            return actions.run_workflow(conn, tracker, catalog, inputs)

    scripting.serve(client, action)


if __name__ == "__main__":
    main()
