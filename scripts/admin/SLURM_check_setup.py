"""BIOMERO admin: Check Setup - validate the configuration and the cluster (biomero check)."""

from __future__ import annotations

import omero.scripts as scripts

from biomeroworker.omero import forms, scripting

VERSION = "1.0.0"


def main() -> None:
    catalog = forms.load_catalog()
    client = scripts.client(
        "Slurm Check Setup (Admin Only)",
        "Check slurm-config.ini, the workflows and the cluster connection "
        "(like `biomero check`). OMERO administrators only.",
        version=VERSION,
        authors=["BIOMERO worker"],
    )

    def action(conn, inputs):  # type: ignore[no-untyped-def]
        scripting.require_admin(conn)
        return scripting.check_setup(catalog)

    scripting.serve(client, action)


if __name__ == "__main__":
    main()
