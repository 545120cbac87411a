"""BIOMERO admin: Init Environment - prepare the cluster (biomero init). Admins only."""

from __future__ import annotations

import omero.scripts as scripts

from biomeroworker.omero import forms, scripting

VERSION = "1.0.0"


def main() -> None:
    catalog = forms.load_catalog()
    client = scripts.client(
        "Slurm Init (Admin Only)",
        "Create the folders, job scripts, converter and runtimes on the Slurm cluster "
        "(like `biomero init`). Safe to repeat. OMERO administrators only.",
        version=VERSION,
        authors=["BIOMERO worker"],
    )

    def action(conn, inputs):  # type: ignore[no-untyped-def]
        scripting.require_admin(conn)
        return scripting.init_environment(catalog)

    scripting.serve(client, action)


if __name__ == "__main__":
    main()
