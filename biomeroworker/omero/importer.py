"""Import a run's results into OMERO through the user's session, exactly once.

What goes where (the options the user chose in Run Workflow):

- result images (label images too) become new images in the chosen or a new dataset;
- with "attach to originals", each result image is also attached to its source image;
- label images give one ROI per label on their source image (polygon or mask);
- CSVs become OMERO.tables (or plain attachments), other files attachments: on the
  result dataset if there is one, else on the source image, else on what was selected;
- a run summary (``biomero/workflow`` and ``biomero/workflow/task/<workflow>``) goes on
  the result dataset or the selection.

Each object is saved together with its provenance annotation in one transaction,
except new images, which take several calls: their description carries a marker
first, and an image with the marker but no provenance (a crash mid-upload) is deleted
and made again. Before importing, the run's existing provenance is read, and whatever
it records is skipped, so a re-run after a crash ends with one set of results.
"""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biomeroworker.omero import provenance as prov
from biomeroworker.omero.connect import OmeroError, omero_errors
from biomeroworker.omero.labels import SHAPES, label_roi
from biomeroworker.omero.results import (
    ExportedImage,
    ResultFile,
    ResultsError,
    display_name,
    label_planes,
    labels_in,
    read_csv,
    read_image,
    scan_results,
)

log = logging.getLogger(__name__)

NS_RESULT = "biomero/workflow/result"
NS_BULK = "openmicroscopy.org/omero/bulk_annotations"
ROI_SHAPES = SHAPES
RUN_ANNOTATIONS_HQL = (
    "select a.id, mv.name, mv.value from MapAnnotation a join a.mapValue mv "
    "where a.ns = :ns and a.id in (select b.id from MapAnnotation b join b.mapValue bv "
    "where b.ns = :ns and bv.name = :key and bv.value = :rid)"
)


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


def run_annotations(conn: Any, run_id: str) -> list[dict[str, str]]:
    """Every provenance annotation of the run, as key -> value dicts."""
    from omero.rtypes import rstring
    from omero.sys import ParametersI

    params = ParametersI()
    params.add("ns", rstring(prov.NS_WORKFLOW))
    params.add("key", rstring(prov.RUN_KEY))
    params.add("rid", rstring(run_id))
    with omero_errors(f"looking up what run {run_id} already imported"):
        rows = conn.getQueryService().projection(RUN_ANNOTATIONS_HQL, params, conn.SERVICE_OPTS)
    by_id: dict[int, dict[str, str]] = {}
    for ann_id, name, value in rows:
        by_id.setdefault(ann_id.val, {})[name.val] = value.val
    return [by_id[k] for k in sorted(by_id)]


def map_annotation(ns: str, pairs: list[tuple[str, str]]) -> Any:
    from omero.model import MapAnnotationI, NamedValue
    from omero.rtypes import rstring

    ann = MapAnnotationI()
    ann.setNs(rstring(ns))
    ann.setMapValue([NamedValue(k, v) for k, v in pairs])
    return ann


def annotation_link(target: str, child: Any) -> Any:
    """A link from ``target`` ("Image:5", "Dataset:2", "Plate:7") to an annotation."""
    import omero.model as m

    kind, _, object_id = target.partition(":")
    classes = {
        "Image": (m.ImageAnnotationLinkI, m.ImageI),
        "Dataset": (m.DatasetAnnotationLinkI, m.DatasetI),
        "Plate": (m.PlateAnnotationLinkI, m.PlateI),
    }
    if kind not in classes or not object_id.isdigit():
        raise OmeroError(f"cannot annotate {target!r}")
    link_class, parent_class = classes[kind]
    link = link_class()
    link.setParent(parent_class(int(object_id), False))
    link.setChild(child)
    return link


@dataclass
class Summary:
    dataset_id: int | None = None
    images: list[int] = field(default_factory=list)
    attachments: int = 0
    tables: int = 0
    roi_sets: int = 0
    rois: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id,
            "images": sorted(self.images),
            "attachments": self.attachments,
            "tables": self.tables,
            "roi_sets": self.roi_sets,
            "rois": self.rois,
            "skipped": self.skipped,
            "problems": self.problems,
        }


class Importer:
    def __init__(
        self,
        conn: Any,
        run: dict[str, Any],
        results: Path,
        index: dict[int, ExportedImage],
        options: ImportOptions,
    ) -> None:
        self.conn = conn
        self.run = run
        self.run_id = str(run["run_id"])
        self.results = results
        self.index = index
        self.options = options
        self.summary = Summary()
        self.done: set[prov.Done] = set()
        self.dataset: Any = None

    # -- the whole import -------------------------------------------------------------

    def import_all(self) -> dict[str, Any]:
        files = scan_results(self.results, set(self.index))
        self.done = prov.done_set(run_annotations(self.conn, self.run_id))
        with omero_errors(f"importing the results of run {self.run_id}"):
            self.dataset = self._result_dataset()
            for item in files:
                try:
                    self._import_file(item)
                except ResultsError as exc:
                    self.summary.problems.append(str(exc))
            self._annotate_run()
        log.info("run %s imported: %s", self.run_id, self.summary.as_dict())
        return self.summary.as_dict()

    def _import_file(self, item: ResultFile) -> None:
        if item.kind in ("image", "label"):
            self._import_image_result(item)
        elif item.kind == "csv" and self.options.csv_as_table:
            for target in self._file_targets(item):
                self._table(item, target)
        else:
            for target in self._file_targets(item):
                self._attach(item, target)

    def _import_image_result(self, item: ResultFile) -> None:
        if self.dataset is not None:
            self._new_image(item)
        if self.options.attach_to_originals and item.source_id is not None:
            self._attach(item, f"Image:{item.source_id}")
        made_rois = False
        if item.kind == "label" and self.options.rois_from_labels and item.source_id is not None:
            made_rois = self._rois(item, item.source_id)
        placed = self.dataset is not None or (
            self.options.attach_to_originals and item.source_id is not None
        )
        if not placed and not made_rois:
            for target in self._fallback_targets():
                self._attach(item, target)

    # -- where things go ----------------------------------------------------------------

    def _result_dataset(self) -> Any:
        if self.options.dataset_id:
            dataset = self.conn.getObject("Dataset", self.options.dataset_id)
            if dataset is None:
                raise OmeroError(
                    f"Dataset {self.options.dataset_id} does not exist or you may not use it"
                )
            self.summary.dataset_id = int(dataset.getId())
            return dataset
        if not self.options.new_dataset:
            return None
        marker = f"{self.run['workflow']} {self.run['version']}, biomero run {self.run_id}"
        name = self.options.new_dataset
        found = list(
            self.conn.getObjects("Dataset", attributes={"name": name, "description": marker})
        )
        if not found:
            from omero.model import DatasetI
            from omero.rtypes import rstring

            dataset = DatasetI()
            dataset.setName(rstring(name))
            dataset.setDescription(rstring(marker))
            pairs = prov.object_pairs(self.run, "dataset", name, "")
            dataset.linkAnnotation(map_annotation(prov.NS_WORKFLOW, pairs))
            saved = self.conn.getUpdateService().saveAndReturnObject(
                dataset, self.conn.SERVICE_OPTS
            )
            found = [self.conn.getObject("Dataset", saved.getId().getValue())]
        self.summary.dataset_id = int(found[0].getId())
        return found[0]

    def _fallback_targets(self) -> list[str]:
        """Where a file with no better home goes: the selected datasets or plates, else
        the selected images."""
        containers = sorted({i.container for i in self.index.values() if i.container})
        if containers:
            return containers
        return [f"Image:{i}" for i in sorted(self.index)]

    def _file_targets(self, item: ResultFile) -> list[str]:
        if self.dataset is not None:
            return [f"Dataset:{int(self.dataset.getId())}"]
        if item.source_id is not None:
            return [f"Image:{item.source_id}"]
        return self._fallback_targets()

    def _is_done(self, kind: str, item: ResultFile, target: str) -> bool:
        if (kind, item.relpath, target) in self.done:
            self.summary.skipped += 1
            return True
        return False

    def _provenance(self, kind: str, result: str, target: str, *extra: tuple[str, str]) -> Any:
        pairs = prov.object_pairs(self.run, kind, result, target) + list(extra)
        self.done.add((kind, result, target))
        return map_annotation(prov.NS_WORKFLOW, pairs)

    # -- the objects --------------------------------------------------------------------

    def _new_image(self, item: ResultFile) -> None:
        target = f"Dataset:{int(self.dataset.getId())}"
        if self._is_done("image", item, target):
            return
        marker = prov.image_marker(self.run_id, item.relpath)
        stale = [
            int(i.getId())
            for i in self.conn.getObjects("Image", attributes={"description": marker})
        ]
        if stale:
            log.info("run %s: removing half-imported image(s) %s", self.run_id, stale)
            self.conn.deleteObjects("Image", stale, deleteAnns=True, wait=True)
        planes = read_image(item.path)
        name = display_name(item.path.name, self.index.get(item.source_id or -1))
        image = self.conn.createImageFromNumpySeq(
            iter(planes.zct_planes()),
            name,
            sizeZ=planes.size_z,
            sizeC=planes.size_c,
            sizeT=planes.size_t,
            description=marker,
            dataset=self.dataset,
        )
        image_id = int(image.getId())
        ann = self._provenance("image", item.relpath, target, ("object", f"Image:{image_id}"))
        self._save([annotation_link(f"Image:{image_id}", ann)])
        self.summary.images.append(image_id)

    def _file_annotation(
        self, item: ResultFile, file_id: int, ns: str, kind: str, target: str
    ) -> Any:
        from omero.model import FileAnnotationI, OriginalFileI
        from omero.rtypes import rstring

        annotation = FileAnnotationI()
        annotation.setFile(OriginalFileI(file_id, False))
        annotation.setNs(rstring(ns))
        annotation.setDescription(
            rstring(
                f"{self.run['workflow']} {self.run['version']}, run {self.run_id}: {item.relpath}"
            )
        )
        annotation.linkAnnotation(self._provenance(kind, item.relpath, target))
        return annotation

    def _attach(self, item: ResultFile, target: str) -> None:
        if self._is_done("attachment", item, target):
            return
        mimetype = mimetypes.guess_type(item.path.name)[0] or "application/octet-stream"
        original = self.conn.createOriginalFileFromLocalFile(str(item.path), mimetype=mimetype)
        annotation = self._file_annotation(
            item, int(original.getId()), NS_RESULT, "attachment", target
        )
        self._save([annotation_link(target, annotation)])
        self.summary.attachments += 1

    def _table(self, item: ResultFile, target: str) -> None:
        if self._is_done("table", item, target):
            return
        columns = [_grid_column(c) for c in read_csv(item.path)]
        resources = self.conn.c.sf.sharedResources()
        repository = resources.repositories().descriptions[0].getId().getValue()
        table = resources.newTable(repository, item.path.name, self.conn.SERVICE_OPTS)
        if table is None:
            raise OmeroError("OMERO.tables is not available on this server")
        try:
            table.initialize(columns)
            table.addData(columns)
            file_id = int(table.getOriginalFile().getId().getValue())
        finally:
            table.close()
        annotation = self._file_annotation(item, file_id, NS_BULK, "table", target)
        self._save([annotation_link(target, annotation)])
        self.summary.tables += 1

    def _rois(self, item: ResultFile, source_id: int) -> bool:
        target = f"Image:{source_id}"
        if self._is_done("rois", item, target):
            return True
        labels = label_planes(read_image(item.path))
        source = self.index.get(source_id)
        if (
            source
            and source.size_x
            and (labels.shape[-1], labels.shape[-2])
            != (
                source.size_x,
                source.size_y,
            )
        ):
            self.summary.problems.append(
                f"{item.relpath}: {labels.shape[-1]}x{labels.shape[-2]} labels do not fit "
                f"Image {source_id} ({source.size_x}x{source.size_y}); no ROIs made"
            )
            return False
        rois = [self._roi(labels, label, source_id) for label in labels_in(labels)]
        count = ("roi_count", str(len(rois)))
        link = annotation_link(target, self._provenance("rois", item.relpath, target, count))
        self._save([*rois, link])
        self.summary.roi_sets += 1
        self.summary.rois += len(rois)
        return True

    def _roi(self, labels: Any, label: int, source_id: int) -> Any:
        name = f"{self.run['workflow']} label {label}"
        return label_roi(labels, label, source_id, name=name, shape=self.options.roi_shape)

    def _annotate_run(self) -> None:
        targets = (
            [f"Dataset:{int(self.dataset.getId())}"]
            if self.dataset is not None
            else self._fallback_targets()
        )
        for target in targets:
            if ("run", "", target) in self.done:
                continue
            summary = self._provenance("run", "", target)
            task = map_annotation(
                prov.task_namespace(str(self.run["workflow"])), prov.task_pairs(self.run)
            )
            self._save([annotation_link(target, summary), annotation_link(target, task)])

    def _save(self, objects: list[Any]) -> list[Any]:
        """One transaction: everything in ``objects`` is saved, or nothing is."""
        return list(
            self.conn.getUpdateService().saveAndReturnArray(objects, self.conn.SERVICE_OPTS)
        )


def _grid_column(column: Any) -> Any:
    import omero.grid as grid

    if column.kind == "long":
        return grid.LongColumn(column.name, "", column.values)
    if column.kind == "double":
        return grid.DoubleColumn(column.name, "", column.values)
    size = max([len(v.encode("utf-8")) for v in column.values] + [1])
    return grid.StringColumn(column.name, "", size, column.values)
