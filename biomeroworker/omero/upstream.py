"""The Run Workflow inputs upstream's scripts declare beyond ours, and what we do with each.

The OMERO.biomero web plugin (omero-biomero 1.6.1) sends every one of these with each
launch, and OMERO silently drops an input a script does not declare, so all are declared
here with upstream's names and types (biomero 2.8.3 ``constants.workflow``). Each answer
is either done as upstream means it, or named in the script's message with what happens
instead: a user's choice is never lost without a word.

Done: ``E-mail`` (a message through OMERO's own mail when the run ends, see ``notify``),
``3b)`` (without it, a new dataset name that exists already means that dataset),
``Select how to import…`` (a heading, as upstream). Answered in the message: the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from biomeroworker.omero.importer import ImportOptions

EMAIL = "E-mail"
USE_ZARR = "Use_ZARR_Format"
ZARR_VERSION = "OME-Zarr_version"
ZARR_VERSIONS = ("0.4", "0.5")
SELECT_IMPORT = "Select how to import your results (one or more)"
OUTPUT_ZIP_TO_PARENT = "1) Zip attachment to parent"
OUTPUT_NEW_SCREEN = "3a) Import into NEW Screen"
OUTPUT_SCREEN_ID = "Screen_ID"
OUTPUT_DUPLICATES = "3b) Allow duplicate dataset (name)?"
OUTPUT_RENAME = "3c) Rename the imported images"
OUTPUT_ATTACH_FILES = "5) Attach individual non-image output files"
ROI_LABEL_PATTERN = "6b) Label image pattern"
ROI_DELETE_LABELS = "6d) Delete label images after ROI creation"
ROI_CLEAR_EXISTING = "6e) Clear existing ROIs on original images"
ROI_CLEAR_FILTER = "6f) Clear existing ROI name filter"
ROI_COLOR = "6g) ROI color override"
NO = "--NO THANK YOU--"

NOT_HERE = "not supported by this worker"


def declarations() -> list[Any]:
    """The inputs, with upstream's names and types; groupings fit between ours."""
    import omero.scripts as scripts
    from omero.rtypes import rstring

    def unsupported(what: str) -> str:
        return f"{what} ({NOT_HERE}; the run says so if you choose it)"

    return [
        scripts.Bool(
            EMAIL,
            grouping="01.5",
            default=True,
            description="E-mail me (OMERO's mail, to my OMERO address) when the run ends",
        ),
        scripts.Bool(
            USE_ZARR,
            grouping="01.6",
            default=False,
            description=unsupported("Run the workflow on OME-Zarr without TIFF conversion"),
        ),
        scripts.String(
            ZARR_VERSION,
            grouping="01.6.1",
            default=ZARR_VERSIONS[0],
            values=[rstring(v) for v in ZARR_VERSIONS],
            description="OME-Zarr version with Use_ZARR_Format (as upstream)",
        ),
        scripts.Bool(
            SELECT_IMPORT,
            optional=False,
            grouping="02",
            default=True,
            description="Choose one or more of the options below",
        ),
        scripts.Bool(
            OUTPUT_ZIP_TO_PARENT,
            grouping="02.2",
            default=False,
            description=unsupported("Attach a zip of all results to the parent"),
        ),
        scripts.String(
            OUTPUT_NEW_SCREEN,
            grouping="02.5.1",
            default=NO,
            description=unsupported("Name of a new screen for the result plates"),
        ),
        scripts.Bool(
            OUTPUT_DUPLICATES,
            grouping="02.6",
            default=False,
            description="A new dataset even if one of yours has that name already "
            "(else the results go into that one)",
        ),
        scripts.Long(
            OUTPUT_SCREEN_ID,
            optional=True,
            grouping="02.62",
            description=unsupported("Or: the id of an existing screen for the results"),
        ),
        scripts.String(
            OUTPUT_RENAME,
            grouping="02.7",
            default=NO,
            description=unsupported("A new name pattern for the imported images"),
        ),
        scripts.Bool(
            OUTPUT_ATTACH_FILES,
            grouping="02.85",
            default=True,
            description="Attach non-image result files (always done here)",
        ),
        scripts.String(
            ROI_LABEL_PATTERN,
            grouping="02.87",
            default="",
            description=unsupported("Which result images are labels (a name pattern)"),
        ),
        scripts.String(
            ROI_COLOR,
            grouping="02.885",
            default="",
            description=unsupported("#RRGGBB colour for the ROIs"),
        ),
        scripts.Bool(
            ROI_DELETE_LABELS,
            grouping="02.89",
            default=False,
            description=unsupported("Delete the label images after making ROIs"),
        ),
        scripts.Bool(
            ROI_CLEAR_EXISTING,
            grouping="02.90",
            default=False,
            description=unsupported("Delete existing ROIs of the source images first"),
        ),
        scripts.String(
            ROI_CLEAR_FILTER,
            grouping="02.91",
            default="",
            description=unsupported("Only existing ROIs whose name contains this"),
        ),
    ]


def _text(inputs: Mapping[str, Any], name: str) -> str:
    value = inputs.get(name)
    return "" if value is None else str(value).strip()


def _chosen(inputs: Mapping[str, Any], name: str) -> bool:
    """A text option is chosen unless empty or upstream's "--NO THANK YOU--"."""
    return _text(inputs, name) not in ("", NO)


def notes(inputs: Mapping[str, Any]) -> list[str]:
    """One line for every choice this worker does not carry out as asked, saying what
    happens instead. Choices left at their default give no line."""
    found = []
    if inputs.get(USE_ZARR) and _text(inputs, ZARR_VERSION):
        found.append(
            f"{ZARR_VERSION} {_text(inputs, ZARR_VERSION)!r}: {NOT_HERE}; the OME-Zarr "
            "version is the worker's (BIOMERO_OMERO_ZARR_FORMAT)"
        )
    if inputs.get(OUTPUT_ZIP_TO_PARENT):
        found.append(
            f"{OUTPUT_ZIP_TO_PARENT}: {NOT_HERE}; each result file is imported or "
            "attached on its own instead"
        )
    if _chosen(inputs, OUTPUT_NEW_SCREEN) or inputs.get(OUTPUT_SCREEN_ID):
        found.append(
            f"{OUTPUT_NEW_SCREEN} / {OUTPUT_SCREEN_ID}: {NOT_HERE}; result images go to the "
            "dataset you chose, else they are attached to the selected plate or images"
        )
    if _chosen(inputs, OUTPUT_RENAME):
        found.append(
            f"{OUTPUT_RENAME}: {NOT_HERE}; result images are named after their source "
            "image (cells.tif gives cells_labels.tif)"
        )
    if inputs.get(OUTPUT_ATTACH_FILES) is False:
        found.append(
            f"{OUTPUT_ATTACH_FILES}: always done here; non-image result files are attached"
        )
    if _text(inputs, ROI_LABEL_PATTERN):
        found.append(
            f"{ROI_LABEL_PATTERN} {_text(inputs, ROI_LABEL_PATTERN)!r}: {NOT_HERE}; label "
            "images are the result images whose name contains 'label' or 'mask'"
        )
    if _text(inputs, ROI_COLOR):
        found.append(f"{ROI_COLOR}: {NOT_HERE}; the ROIs get OMERO's default colour")
    if inputs.get(ROI_DELETE_LABELS):
        found.append(f"{ROI_DELETE_LABELS}: {NOT_HERE}; the label images are kept")
    if inputs.get(ROI_CLEAR_EXISTING) or _text(inputs, ROI_CLEAR_FILTER):
        found.append(
            f"{ROI_CLEAR_EXISTING} / {ROI_CLEAR_FILTER}: {NOT_HERE}; existing ROIs are kept"
        )
    return found


def existing_dataset(
    conn: Any, inputs: Mapping[str, Any], options: ImportOptions
) -> tuple[ImportOptions, str | None]:
    """3b) unchecked, as upstream: a new dataset name that one of the user's datasets has
    already means that dataset (the oldest, when several do)."""
    if not options.new_dataset or inputs.get(OUTPUT_DUPLICATES):
        return options, None
    user_id = int(conn.getEventContext().userId)
    found = sorted(
        int(d.getId())
        for d in conn.getObjects(
            "Dataset", attributes={"name": options.new_dataset}, opts={"owner": user_id}
        )
    )
    if not found:
        return options, None
    reused = dataclasses.replace(options, new_dataset=None, dataset_id=found[0])
    return reused, (
        f"Results go into your existing dataset {options.new_dataset!r} "
        f"(Dataset {found[0]}); tick {OUTPUT_DUPLICATES!r} for a new one"
    )


def notify_address(conn: Any, inputs: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """E-mail, as upstream: the address in the user's OMERO profile, if the user asked."""
    if not inputs.get(EMAIL):
        return None, None
    address = str(conn.getUser().getEmail() or "").strip()
    if not address or address == "None" or "@" not in address:
        return None, (
            f"{EMAIL}: your OMERO account has no e-mail address, so no message is sent "
            "(add one to your OMERO profile)"
        )
    return address, f"{EMAIL}: a message goes to {address} when the run ends"
