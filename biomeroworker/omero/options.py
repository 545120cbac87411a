"""Where a run's results go in OMERO (the Run Workflow form's output choices).

No omero import: the script forms (``forms``) read and check these before anything
talks to OMERO, and they import where omero-py is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from biomeroworker.omero.errors import OmeroError
from biomeroworker.omero.labels import SHAPES

ROI_SHAPES = SHAPES


@dataclass(frozen=True)
class ImportOptions:
    """Where results go; stored in the run's inputs under "outputs"."""

    new_dataset: str | None = None
    dataset_id: int | None = None
    attach_to_originals: bool = False
    csv_as_table: bool = True
    rois_from_labels: bool = False
    roi_shape: str = "Polygon"

    def __post_init__(self) -> None:
        if self.roi_shape not in ROI_SHAPES:
            raise OmeroError(f"ROI shape must be one of {', '.join(ROI_SHAPES)}")
        if self.new_dataset is not None and not self.new_dataset.strip():
            raise OmeroError("the new dataset needs a name")

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, Any]) -> ImportOptions:
        dataset_id = outputs.get("dataset_id")
        return cls(
            new_dataset=outputs.get("new_dataset") or None,
            dataset_id=int(dataset_id) if dataset_id else None,
            attach_to_originals=bool(outputs.get("attach_to_originals", False)),
            csv_as_table=bool(outputs.get("csv_as_table", True)),
            rois_from_labels=bool(outputs.get("rois_from_labels", False)),
            roi_shape=str(outputs.get("roi_shape") or "Polygon"),
        )

    def to_outputs(self) -> dict[str, Any]:
        return {
            "new_dataset": self.new_dataset,
            "dataset_id": self.dataset_id,
            "attach_to_originals": self.attach_to_originals,
            "csv_as_table": self.csv_as_table,
            "rois_from_labels": self.rois_from_labels,
            "roi_shape": self.roi_shape,
        }

    @property
    def images_have_a_home(self) -> bool:
        return bool(self.new_dataset or self.dataset_id or self.attach_to_originals)
