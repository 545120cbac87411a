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

Images are read one plane at a time and uploaded tile by tile through their own raw
pixels store, in the tile size the server asks for, so an image larger than the
server's maximum plane size (or Ice's message limit) imports like a small one. CSVs
are streamed into tables in chunks of rows.

Each result file is imported on its own: a file that cannot be read, or a write OMERO
refuses (``omero.SecurityViolation``: the group's permissions), is recorded in the
summary's ``problems`` and the other results still import. What is refused in a
group is placed in a dataset of the user's own instead (see docs/omero.md). OMERO
being unreachable stops the import, which is retried and skips what was done.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import omero
import omero.clients  # the generated modules, before the omero.model imports below
import omero.model.enums
from omero.model import (
    ChecksumAlgorithmI,
    DatasetAnnotationLinkI,
    DatasetI,
    DatasetImageLinkI,
    FileAnnotationI,
    ImageAnnotationLinkI,
    ImageI,
    MapAnnotationI,
    MaskI,
    NamedValue,
    OriginalFileI,
    PlateAnnotationLinkI,
    PlateI,
    PolygonI,
    RoiI,
)
from omero.rtypes import rdouble, rint, rlong, rstring
from omero.sys import ParametersI

from biomeroworker.omero import provenance as prov
from biomeroworker.omero.connect import (
    OmeroError,
    OmeroRefused,
    OmeroUnavailable,
    omero_errors,
)
from biomeroworker.omero.options import ImportOptions
from biomeroworker.omero.results import (
    DEFAULT_MAX_PLANE_BYTES,
    ExportedImage,
    ImageFile,
    ResultFile,
    ResultsError,
    csv_chunks,
    display_name,
    label_plane,
    labels_in,
    mask_shapes,
    polygon_shapes,
    scan_csv,
    scan_results,
)
from biomeroworker.run_record import RunRecord

log = logging.getLogger(__name__)

NS_RESULT = "biomero/workflow/result"
NS_BULK = "openmicroscopy.org/omero/bulk_annotations"
RUN_ANNOTATIONS_HQL = (
    "select a.id, mv.name, mv.value from MapAnnotation a join a.mapValue mv "
    "where a.ns = :ns and a.id in (select b.id from MapAnnotation b join b.mapValue bv "
    "where b.ns = :ns and bv.name = :key and bv.value = :rid)"
)
# How long a delete may take before the step gives up and is retried (10 minutes).
DELETE_POLL_MS = 500
DELETE_POLLS = 1200
UPLOAD_BLOCK = 1 << 20


def run_annotations(conn: Any, run_id: str) -> list[dict[str, str]]:
    """Every provenance annotation of the run, as key -> value dicts."""
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
    ann = MapAnnotationI()
    ann.setNs(rstring(ns))
    ann.setMapValue([NamedValue(k, v) for k, v in pairs])
    return ann


def annotation_link(target: str, child: Any) -> Any:
    """A link from ``target`` ("Image:5", "Dataset:2", "Plate:7") to an annotation."""
    kind, _, object_id = target.partition(":")
    classes = {
        "Image": (ImageAnnotationLinkI, ImageI),
        "Dataset": (DatasetAnnotationLinkI, DatasetI),
        "Plate": (PlateAnnotationLinkI, PlateI),
    }
    if kind not in classes or not object_id.isdigit():
        raise OmeroError(f"cannot annotate {target!r}")
    link_class, parent_class = classes[kind]
    link = link_class()
    link.setParent(parent_class(int(object_id), False))
    link.setChild(child)
    return link


def delete_and_wait(conn: Any, kind: str, ids: list[int]) -> None:
    """Delete ``kind`` objects and wait until OMERO has finished (or refused).

    BlitzGateway.deleteObjects(wait=True) gives up after 5 s and returns while the
    delete may still run; here a delete still running after 10 minutes leaves the step
    to be retried, and a refused one (omero.CmdError) is an error, not retried."""
    handle = conn.deleteObjects(kind, ids, deleteAnns=True, wait=False)
    try:
        conn.c.waitOnCmd(
            handle,
            loops=DELETE_POLLS,
            ms=DELETE_POLL_MS,
            failonerror=True,
            failontimeout=True,
            closehandle=True,
        )
    except omero.LockTimeout as exc:
        raise OmeroUnavailable(f"deleting {kind} {ids}: still running, retried later") from exc
    except omero.CmdError as exc:
        raise OmeroError(f"OMERO refused to delete {kind} {ids}: {_cmd_error(exc.err)}") from exc


def _cmd_error(err: Any) -> str:
    name = getattr(err, "name", "") or type(err).__name__
    details = getattr(err, "parameters", None) or {}
    message = details.get("message") or "; ".join(f"{k}: {v}" for k, v in details.items())
    return f"{name} {message}".strip()


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
        run: RunRecord,
        results: Path,
        index: dict[int, ExportedImage],
        options: ImportOptions,
        *,
        max_plane_bytes: int = DEFAULT_MAX_PLANE_BYTES,
    ) -> None:
        self.conn = conn
        self.max_plane_bytes = max_plane_bytes
        self.run = run
        self.run_id = run.run_id
        self.results = results
        self.index = index
        self.options = options
        self.summary = Summary()
        self.done: set[prov.Done] = set()
        self.dataset: Any = None
        self._own_dataset: Any = None

    # -- the whole import -------------------------------------------------------------

    def import_all(self) -> dict[str, Any]:
        files = scan_results(self.results, set(self.index))
        self.done = prov.done_set(run_annotations(self.conn, self.run_id))
        with omero_errors(f"importing the results of run {self.run_id}"):
            self.dataset = self._result_dataset()
        for item in files:
            try:
                with omero_errors(f"{item.relpath}"):
                    self._import_file(item)
            except (ResultsError, OmeroError) as exc:
                # This file only; OmeroUnavailable (retry the step) is not caught here.
                log.warning("run %s: %s", self.run_id, exc)
                self.summary.problems.append(str(exc))
        with omero_errors(f"annotating the results of run {self.run_id}"):
            self._annotate_run()
        log.info("run %s imported: %s", self.run_id, self.summary.as_dict())
        return self.summary.as_dict()

    def _import_file(self, item: ResultFile) -> None:
        if item.kind in ("image", "label"):
            self._import_image_result(item)
            return
        as_table = item.kind == "csv" and self.options.csv_as_table
        write = self._table if as_table else self._attach
        placed = [self._try(item, lambda t=t: write(item, t)) for t in self._file_targets(item)]
        if not any(placed):
            self._to_own_dataset(item)

    def _import_image_result(self, item: ResultFile) -> None:
        placed = False
        made = [d for d in self.done if d[0] == "image" and d[1] == item.relpath]
        if self.dataset is not None and made:
            placed = True  # made before, in the chosen dataset or (refused there) the user's own
            self.summary.skipped += 1
        elif self.dataset is not None:
            placed = bool(self._try(item, lambda: self._new_image(item, self.dataset)))
            if not placed:
                home = self._own_results_dataset()
                placed = bool(self._try(item, lambda: self._new_image(item, home)))
                if placed:
                    self._note_moved(item, home)
        if self.options.attach_to_originals and item.source_id is not None:
            target = f"Image:{item.source_id}"
            placed = bool(self._try(item, lambda: self._attach(item, target))) or placed
        made_rois = False
        if item.kind == "label" and self.options.rois_from_labels and item.source_id is not None:
            source = item.source_id
            made_rois = bool(self._try(item, lambda: self._rois(item, source)))
        if not placed and not made_rois:
            placed = any(
                [
                    self._try(item, lambda t=t: self._attach(item, t))
                    for t in self._fallback_targets()
                ]
            )
            if not placed:
                self._to_own_dataset(item)

    def _try(self, item: ResultFile, write: Any) -> bool:
        """Run one write for ``item``. False when it placed nothing: ``write`` said so,
        or OMERO refused it (the group's permissions; recorded in the problems)."""
        try:
            with omero_errors(item.relpath):
                return write() is not False
        except OmeroRefused as exc:
            self.summary.problems.append(str(exc))
            return False

    def _to_own_dataset(self, item: ResultFile) -> None:
        """A result that could go nowhere else is attached to the user's own dataset."""
        home = self._own_results_dataset()
        with omero_errors(item.relpath):
            self._attach(item, f"Dataset:{int(home.getId())}")
        self._note_moved(item, home)

    def _note_moved(self, item: ResultFile, home: Any) -> None:
        self.summary.problems.append(
            f"{item.relpath}: placed in your Dataset {int(home.getId())} ({home.getName()}) instead"
        )

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
        marker = f"{self.run.workflow} {self.run.version}, biomero run {self.run_id}"
        dataset = self._dataset_named(self.options.new_dataset, marker)
        self.summary.dataset_id = int(dataset.getId())
        return dataset

    def _fallback_targets(self) -> list[str]:
        """Where a file with no better home goes: the selected datasets or plates, else
        the selected images."""
        containers = sorted({i.container for i in self.index.values() if i.container})
        if containers:
            return containers
        return [f"Image:{i}" for i in sorted(self.index)]

    def _own_results_dataset(self) -> Any:
        """A dataset of the user's own for what the group does not let them put
        elsewhere (made once per run, on first need)."""
        if self._own_dataset is None:
            name = f"{self.run.workflow} results (run {self.run_id[:8]})"
            marker = f"{self.run.workflow} {self.run.version}, biomero run {self.run_id}"
            self._own_dataset = self._dataset_named(name, marker)
        return self._own_dataset

    def _dataset_named(self, name: str, marker: str) -> Any:
        found = list(
            self.conn.getObjects(
                "Dataset",
                attributes={"name": name, "description": marker},
                opts={"owner": self.conn.getUserId()},
            )
        )
        if not found:
            dataset = DatasetI()
            dataset.setName(rstring(name))
            dataset.setDescription(rstring(marker))
            pairs = prov.object_pairs(self.run, "dataset", name, "")
            dataset.linkAnnotation(map_annotation(prov.NS_WORKFLOW, pairs))
            saved = self.conn.getUpdateService().saveAndReturnObject(
                dataset, self.conn.SERVICE_OPTS
            )
            found = [self.conn.getObject("Dataset", saved.getId().getValue())]
        return found[0]

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

    def _new_image(self, item: ResultFile, dataset: Any) -> None:
        target = f"Dataset:{int(dataset.getId())}"
        if self._is_done("image", item, target):
            return
        marker = prov.image_marker(self.run_id, item.relpath)
        stale = [
            int(i.getId())
            for i in self.conn.getObjects("Image", attributes={"description": marker})
        ]
        if stale:
            log.info("run %s: removing half-imported image(s) %s", self.run_id, stale)
            delete_and_wait(self.conn, "Image", stale)
        name = display_name(item.path.name, self.index.get(item.source_id or -1))
        with ImageFile.open(item.path, self.max_plane_bytes) as image:
            image_id = upload_image(self.conn, image, name, marker)
        try:
            link = DatasetImageLinkI()
            link.setParent(DatasetI(int(dataset.getId()), False))
            link.setChild(ImageI(image_id, False))
            ann = self._provenance("image", item.relpath, target, ("object", f"Image:{image_id}"))
            self._save([link, annotation_link(f"Image:{image_id}", ann)])
        except omero.SecurityViolation:
            self.done.discard(("image", item.relpath, target))
            delete_and_wait(self.conn, "Image", [image_id])
            raise
        self.summary.images.append(image_id)

    def _file_annotation(
        self, item: ResultFile, file_id: int, ns: str, kind: str, target: str
    ) -> Any:
        annotation = FileAnnotationI()
        annotation.setFile(OriginalFileI(file_id, False))
        annotation.setNs(rstring(ns))
        annotation.setDescription(
            rstring(f"{self.run.workflow} {self.run.version}, run {self.run_id}: {item.relpath}")
        )
        annotation.linkAnnotation(self._provenance(kind, item.relpath, target))
        return annotation

    def _save_or_forget(self, objects: list[Any], kind: str, item: ResultFile, target: str) -> None:
        """Save; if refused, forget the provenance recorded for it so it can go elsewhere."""
        try:
            self._save(objects)
        except omero.SecurityViolation:
            self.done.discard((kind, item.relpath, target))
            raise

    def _attach(self, item: ResultFile, target: str) -> None:
        if self._is_done("attachment", item, target):
            return
        mimetype = mimetypes.guess_type(item.path.name)[0] or "application/octet-stream"
        file_id = upload_file(self.conn, item, mimetype)
        annotation = self._file_annotation(item, file_id, NS_RESULT, "attachment", target)
        self._save_or_forget([annotation_link(target, annotation)], "attachment", item, target)
        self.summary.attachments += 1

    def _table(self, item: ResultFile, target: str) -> None:
        if self._is_done("table", item, target):
            return
        schema = scan_csv(item.path)
        resources = self.conn.c.sf.sharedResources()
        repository = resources.repositories().descriptions[0].getId().getValue()
        table = resources.newTable(repository, item.path.name, self.conn.SERVICE_OPTS)
        if table is None:
            raise OmeroError("OMERO.tables is not available on this server")
        try:
            table.initialize([_grid_column(schema, i, []) for i in range(len(schema.names))])
            for chunk in csv_chunks(schema):
                table.addData([_grid_column(schema, i, c.values) for i, c in enumerate(chunk)])
            file_id = int(table.getOriginalFile().getId().getValue())
        finally:
            table.close()
        annotation = self._file_annotation(item, file_id, NS_BULK, "table", target)
        self._save_or_forget([annotation_link(target, annotation)], "table", item, target)
        self.summary.tables += 1

    def _rois(self, item: ResultFile, source_id: int) -> bool:
        target = f"Image:{source_id}"
        if self._is_done("rois", item, target):
            return True
        with ImageFile.open(item.path, self.max_plane_bytes) as image:
            if image.size_c != 1:
                raise ResultsError(
                    f"{item.relpath}: a label image has one channel, not {image.size_c}"
                )
            source = self.index.get(source_id)
            if (
                source
                and source.size_x
                and (image.size_x, image.size_y)
                != (
                    source.size_x,
                    source.size_y,
                )
            ):
                self.summary.problems.append(
                    f"{item.relpath}: {image.size_x}x{image.size_y} labels do not fit "
                    f"Image {source_id} ({source.size_x}x{source.size_y}); no ROIs made"
                )
                return False
            shapes: dict[int, list[Any]] = {}
            for z in range(image.size_z):
                plane = label_plane(image.plane(0, 0, z), item.relpath)[np.newaxis]
                for label in labels_in(plane):
                    shapes.setdefault(label, []).extend(
                        self._shapes(plane, label, z, image.size_z == 1)
                    )
        rois = [self._roi(label, found, source_id) for label, found in sorted(shapes.items())]
        count = ("roi_count", str(len(rois)))
        link = annotation_link(target, self._provenance("rois", item.relpath, target, count))
        self._save_or_forget([*rois, link], "rois", item, target)
        self.summary.roi_sets += 1
        self.summary.rois += len(rois)
        return True

    def _shapes(self, plane: Any, label: int, z: int, one_plane: bool) -> list[Any]:
        """The shapes of ``label`` in one plane (``plane`` is 1xYxX)."""
        made: list[Any] = []
        if self.options.roi_shape == "Mask":
            for m in mask_shapes(plane, label):
                shape = MaskI()
                shape.setX(rdouble(m.x))
                shape.setY(rdouble(m.y))
                shape.setWidth(rdouble(m.width))
                shape.setHeight(rdouble(m.height))
                shape.setBytes(m.bits)
                made.append(shape)
        else:
            for p in polygon_shapes(plane, label):
                shape = PolygonI()
                shape.setPoints(rstring(p.points))
                made.append(shape)
        for shape in made:
            shape.setTextValue(rstring(str(label)))
            if not one_plane:  # a 2D label image outlines every Z plane of its source
                shape.setTheZ(rint(z))
        return made

    def _roi(self, label: int, shapes: list[Any], source_id: int) -> Any:
        roi = RoiI()
        roi.setImage(ImageI(source_id, False))
        roi.setName(rstring(f"{self.run.workflow} label {label}"))
        for shape in shapes:
            roi.addShape(shape)
        return roi

    def _annotate_run(self) -> None:
        targets = (
            [f"Dataset:{int(self.dataset.getId())}"]
            if self.dataset is not None
            else self._fallback_targets()
        )
        if self._own_dataset is not None:
            targets.append(f"Dataset:{int(self._own_dataset.getId())}")
        summarised = False
        for target in targets:
            try:
                with omero_errors(f"the run summary on {target}"):
                    self._summary_on(target)
                summarised = True
            except OmeroRefused as exc:
                self.summary.problems.append(str(exc))
        if not summarised:
            home = self._own_results_dataset()
            with omero_errors("the run summary"):
                self._summary_on(f"Dataset:{int(home.getId())}")

    def _summary_on(self, target: str) -> None:
        if ("run", "", target) in self.done:
            return
        summary = self._provenance("run", "", target)
        task = map_annotation(prov.task_namespace(self.run.workflow), prov.task_pairs(self.run))
        try:
            self._save([annotation_link(target, summary), annotation_link(target, task)])
        except omero.SecurityViolation:
            self.done.discard(("run", "", target))
            raise

    def _save(self, objects: list[Any]) -> list[Any]:
        """One transaction: everything in ``objects`` is saved, or nothing is."""
        return list(
            self.conn.getUpdateService().saveAndReturnArray(objects, self.conn.SERVICE_OPTS)
        )


def _grid_column(schema: Any, index: int, values: list[Any]) -> Any:
    import omero.grid as grid

    name, kind = schema.names[index], schema.kinds[index]
    if kind == "long":
        return grid.LongColumn(name, "", values)
    if kind == "double":
        return grid.DoubleColumn(name, "", values)
    return grid.StringColumn(name, "", schema.string_sizes[index], values)


def upload_file(conn: Any, item: ResultFile, mimetype: str) -> int:
    """Upload a result file in blocks; return the new OriginalFile's id.

    Like BlitzGateway.createOriginalFileFromLocalFile, but the checksum is computed
    block by block too (omero-py reads the whole file into memory for it)."""
    digest = hashlib.sha1()  # noqa: S324 -- the checksum OMERO stores for files (SHA1-160)
    size = 0
    with item.path.open("rb") as handle:
        while block := handle.read(UPLOAD_BLOCK):
            digest.update(block)
            size += len(block)
    original = OriginalFileI()
    original.setName(rstring(item.path.name))
    original.setPath(rstring(str(Path(item.relpath).parent)))
    original.setMimetype(rstring(mimetype))
    original.setSize(rlong(size))
    original.setHash(rstring(digest.hexdigest()))
    hasher = ChecksumAlgorithmI()
    hasher.setValue(rstring(omero.model.enums.ChecksumAlgorithmSHA1160))
    original.setHasher(hasher)
    original = conn.getUpdateService().saveAndReturnObject(original, conn.SERVICE_OPTS)
    file_id = int(original.getId().getValue())
    store = conn.c.sf.createRawFileStore()
    try:
        store.setFileId(file_id, conn.SERVICE_OPTS)
        position = 0
        with item.path.open("rb") as handle:
            while block := handle.read(UPLOAD_BLOCK):
                store.write(block, position, len(block), conn.SERVICE_OPTS)
                position += len(block)
        store.save(conn.SERVICE_OPTS)
    finally:
        store.close()
    return file_id


def pixels_type(conn: Any, value: str) -> Any:
    """The server's PixelsType object for a value from results.PIXEL_TYPES."""
    found = conn.getQueryService().findByQuery(
        "from PixelsType as p where p.value = :value",
        _params(value=rstring(value)),
        conn.SERVICE_OPTS,
    )
    if found is None:
        raise OmeroError(f"this OMERO server has no pixel type {value!r}")
    return found


def _params(**values: Any) -> Any:
    params = ParametersI()
    for key, value in values.items():
        params.add(key, value)
    return params


def upload_image(conn: Any, image: ImageFile, name: str, description: str) -> int:
    """Create an image and write its pixels tile by tile; return the new image's id.

    The store is this call's own (not the connection's cached one), tiles have the size
    the server gives for these pixels (a pyramid on big images), and planes go in
    OMERO's XYZCT order, so any image size within the per-plane read limit works."""
    pixels_service = conn.getPixelsService()
    image_id = pixels_service.createImage(
        image.size_x,
        image.size_y,
        image.size_z,
        image.size_t,
        list(range(image.size_c)),
        pixels_type(conn, image.pixel_type),
        name,
        description,
        conn.SERVICE_OPTS,
    ).getValue()
    pixels_id = conn.getObject("Image", image_id).getPrimaryPixels().getId()
    store = conn.c.sf.createRawPixelsStore()
    ranges: dict[int, tuple[float, float]] = {}
    try:
        store.setPixelsId(pixels_id, True, conn.SERVICE_OPTS)
        tile_w, tile_h = store.getTileSize(conn.SERVICE_OPTS)
        big_endian = image.dtype.newbyteorder(">")
        for t in range(image.size_t):
            for c in range(image.size_c):
                for z in range(image.size_z):
                    plane = image.plane(t, c, z)
                    if plane.size:
                        low, high = float(plane.min()), float(plane.max())
                        seen = ranges.get(c, (low, high))
                        ranges[c] = (min(seen[0], low), max(seen[1], high))
                    for y in range(0, image.size_y, tile_h):
                        for x in range(0, image.size_x, tile_w):
                            tile = plane[y : y + tile_h, x : x + tile_w]
                            store.setTile(
                                tile.astype(big_endian).tobytes(),
                                z,
                                c,
                                t,
                                x,
                                y,
                                tile.shape[1],
                                tile.shape[0],
                                conn.SERVICE_OPTS,
                            )
    finally:
        store.close(conn.SERVICE_OPTS)
    for c, (low, high) in sorted(ranges.items()):
        pixels_service.setChannelGlobalMinMax(pixels_id, c, low, high, conn.SERVICE_OPTS)
    return int(image_id)
