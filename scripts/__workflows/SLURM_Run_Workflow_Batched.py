"""BIOMERO: run a workflow on the selected images in batches, one run per batch."""

from __future__ import annotations

import omero.scripts as scripts
from omero.constants.namespaces import NSDYNAMIC

from biomeroworker.omero import actions, forms, scripting, upstream

VERSION = "1.0.0"


def main() -> None:
    catalog = forms.load_catalog()
    client = scripts.client(
        "Slurm Workflow (Batched)",
        forms.run_description(catalog) + "\nThe images are split into runs of Batch_Size images.",
        *forms.selection_inputs(),
        forms.batch_size_input(),
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
            return actions.run_workflow(conn, tracker, catalog, inputs, batched=True)

    scripting.serve(client, action)


if __name__ == "__main__":
    main()
