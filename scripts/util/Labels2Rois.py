"""BIOMERO: Labels2Rois - turn label images in OMERO into ROIs on the images they outline.

One ROI per label value (a Polygon outline or a Mask per Z plane). Select label images
with Target_Image_IDs (one per label image, in order), or datasets: each image whose
name contains "label" or "mask" goes with the image of the same dataset whose name it
starts with (cells_labels.tif outlines cells.tif). The OMERO.biomero web plugin offers
"create ROIs" only when a script with this file name is installed.
"""

from __future__ import annotations

import omero.scripts as scripts
from omero.rtypes import rlong, rstring

from biomeroworker.omero import labels, scripting

VERSION = "1.0.0"
DATA_TYPES = ("Dataset", "Image")


def main() -> None:
    client = scripts.client(
        "Labels2Rois",
        "Make ROIs on images from their label images: one ROI per label value.",
        scripts.String(
            "Data_Type",
            optional=False,
            grouping="01",
            values=[rstring(t) for t in DATA_TYPES],
            default="Dataset",
            description="Datasets holding label images and their sources, or label images",
        ),
        scripts.List("IDs", optional=False, grouping="02", description="Their ids").ofType(
            rlong(0)
        ),
        scripts.List(
            "Target_Image_IDs",
            optional=True,
            grouping="03",
            description="With Data_Type Image: the image each label image outlines, in order",
        ).ofType(rlong(0)),
        scripts.String(
            "ROI_Shape",
            grouping="04",
            default="Polygon",
            values=[rstring(s) for s in labels.SHAPES],
            description="Polygon outlines, or Masks",
        ),
        scripts.Bool(
            "Delete_Label_Image",
            grouping="05",
            default=False,
            description="Delete each label image once its ROIs are saved",
        ),
        version=VERSION,
        authors=["BIOMERO worker"],
    )

    def action(conn, inputs):  # type: ignore[no-untyped-def]
        pairs, problems = labels.pairs_from_inputs(conn, inputs)
        lines = labels.labels_to_rois(
            conn,
            pairs,
            shape=str(inputs.get("ROI_Shape") or "Polygon"),
            delete_labels=bool(inputs.get("Delete_Label_Image")),
        )
        return "\n".join(problems + lines) or "No label images found"

    scripting.serve(client, action)


if __name__ == "__main__":
    main()
