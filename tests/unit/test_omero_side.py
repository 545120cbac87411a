"""OmeroSide over omero-py's real BlitzGateway and wrappers, on stand-in Ice services.

tests/omero_standins.py stands in for the server under omero-py; everything above
(BlitzGateway, its HQL, suConn, the wrappers) is omero-py's own code.
tests/integration/test_omero_real.py runs the same scenarios against a real server
when OMERO_HOST and friends are set.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from omero_standins import StandInCrash, StandInServer

from biomeroworker.errors import ConnectError
from biomeroworker.omero import provenance as prov
from biomeroworker.omero.connect import OmeroError, OmeroServer, SudoConnector
from biomeroworker.omero.exporter import export_args
from biomeroworker.omero.importer import run_annotations
from biomeroworker.omero.results import EXPORT_INDEX, read_index
from biomeroworker.omero.side import OmeroSide
from biomeroworker.run_record import RunInputs, RunRecord, TaskRecord

GROUP, OTHER_GROUP = 3, 4
RUN_ID = "8c0e6a2e-3f52-4d8e-9a55-1f0f6c1d2b7a"


class RecordingExport:
    """Writes what image_to_zarr would (``<output>/<id>.ome.zarr``) and records calls
    (tests/unit/test_omero_export.py runs the real image_to_zarr)."""

    def __init__(self, *, crash_on: int | None = None, barrier: threading.Barrier | None = None):
        self.calls: list[tuple[int, argparse.Namespace]] = []
        self.crash_on = crash_on
        self.barrier = barrier
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()

    def __call__(self, image: Any, args: argparse.Namespace) -> None:
        with self.lock:
            self.calls.append((int(image.getId()), args))
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if self.barrier is not None:
                self.barrier.wait()
            folder = Path(args.output) / f"{image.getId()}.ome.zarr"
            folder.mkdir()
            if self.crash_on == int(image.getId()):
                raise StandInCrash("export died half-way")
            # OME-Zarr 0.5 metadata and the first level's array metadata: what the
            # export step checks (biomeroworker.inputs); the pixels do not matter here.
            ome = {"version": "0.5", "multiscales": [{"datasets": [{"path": "0"}]}]}
            group = {"zarr_format": 3, "node_type": "group", "attributes": {"ome": ome}}
            (folder / "zarr.json").write_text(json.dumps(group))
            (folder / "0").mkdir()
            (folder / "0" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "array"}')
        finally:
            with self.lock:
                self.active -= 1


ADMIN = OmeroServer("omero.example", 4064, "biomero-sudo", "s3cret")


@pytest.fixture
def server() -> StandInServer:
    s = StandInServer()
    s.add_user("biomero-sudo", 0, password="s3cret", privileges=("Sudo",))
    s.add_user("alice", GROUP, "lab")
    s.add_user("bob", OTHER_GROUP, "other-lab")
    return s


def gateway_for(server: StandInServer) -> Any:
    """omero-py's BlitzGateway on the stand-in server, as SudoConnector makes it."""
    gateway = server.gateway_class()
    return lambda s: gateway(s.user, s.password, host=s.host, port=s.port, secure=True)


def side_for(
    server: StandInServer,
    export: Any = None,
    workers: int = 2,
    **options: Any,
) -> OmeroSide:
    connector = SudoConnector(ADMIN, gateway=gateway_for(server))
    return OmeroSide(
        connector, export_fn=export or RecordingExport(), export_workers=workers, **options
    )


def make_run(
    ids: list[int],
    *,
    data_type: str = "Image",
    user: str = "alice",
    group: int = GROUP,
    outputs: dict[str, Any] | None = None,
    export_paths: list[Path] | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=RUN_ID,
        workflow="nuclei",
        version="v1.2.0",
        user=user,
        omero_user_id=1,
        omero_group_id=group,
        state="RUNNING",
        parameters={"sigma": 1.5, "threshold_method": "otsu"},
        inputs=RunInputs(
            {
                "source": "omero",
                "data_type": data_type,
                "ids": ids,
                "outputs": outputs or {},
                "partition": None,
                "output_dir": None,
            }
        ),
        tasks=(
            TaskRecord(
                task_id="t-export",
                kind="export",
                state="COMPLETED",
                result_locations=tuple(str(p) for p in export_paths or []),
            ),
            TaskRecord(
                task_id="t-job",
                kind="job",
                state="COMPLETED",
                slurm_job_id="4711",
                job_state="COMPLETED",
                elapsed_s=12.0,
            ),
        ),
    )


LABELS = np.zeros((48, 64), dtype=np.uint16)
LABELS[5:10, 5:12] = 1
LABELS[20:30, 30:35] = 2
LABELS[40:44, 50:60] = 7


def write_results(folder: Path, image_id: int) -> Path:
    folder.mkdir(parents=True)
    tifffile.imwrite(folder / f"image{image_id}_labels.tif", LABELS)
    (folder / f"image{image_id}_objects.csv").write_text(
        "image,label,area,mean\nimage1,1,35,0.5\nimage1,2,50,\nimage1,7,40,1.25\n"
    )
    (folder / "run-report.txt").write_text("all good\n")
    return folder


def exported(server: StandInServer, tmp_path: Path, image_ids: list[int]) -> list[Path]:
    side = side_for(server)
    return side.export(make_run(image_ids), tmp_path / "in")


# -- export --------------------------------------------------------------------------


def test_export_writes_one_ome_zarr_per_image_of_a_dataset_and_an_id_name_index(
    server: StandInServer, tmp_path: Path
) -> None:
    a = server.add_image("alice", GROUP, "cells a.tif")
    b = server.add_image("alice", GROUP, "cells b.tif")
    ds = server.add_dataset("alice", GROUP, "plate scans", [b, a])
    paths = side_for(server).export(make_run([ds], data_type="Dataset"), tmp_path / "in")
    assert [p.name for p in paths] == [f"image{a}.ome.zarr", f"image{b}.ome.zarr"]
    assert all((p / "zarr.json").is_file() for p in paths)
    index = read_index(tmp_path / "in" / EXPORT_INDEX)
    assert index[a].name == "cells a.tif"
    assert index[b].container == f"Dataset:{ds}"
    assert not (tmp_path / "in" / ".partial").exists()


def test_export_gives_image_to_zarr_every_argument_it_reads() -> None:
    from omero_zarr.raw_pixels import image_to_zarr

    assert list(inspect.signature(image_to_zarr).parameters) == ["image", "args"]
    read = set(re.findall(r"args\.(\w+)", inspect.getsource(image_to_zarr)))
    args = export_args(Path("/out"), "0.4")
    assert read <= set(vars(args))
    assert args.name_by == "id"  # so the folder is <id>.ome.zarr


def test_export_of_a_plate_exports_each_of_its_images(
    server: StandInServer, tmp_path: Path
) -> None:
    images = [server.add_image("alice", GROUP, f"well {n}") for n in range(3)]
    plate = server.add_plate("alice", GROUP, "screen 1", images)
    paths = side_for(server).export(make_run([plate], data_type="Plate"), tmp_path / "in")
    assert [p.name for p in paths] == [f"image{i}.ome.zarr" for i in images]


def test_export_after_a_crash_keeps_finished_images_and_redoes_the_half_written_one(
    server: StandInServer, tmp_path: Path
) -> None:
    images = [server.add_image("alice", GROUP, f"img {n}") for n in range(3)]
    crashing = RecordingExport(crash_on=images[1])
    with pytest.raises(StandInCrash):
        side_for(server, crashing, workers=1).export(make_run(images), tmp_path / "in")
    done_before = sorted(p.name for p in (tmp_path / "in").glob("*.ome.zarr"))
    assert done_before == [f"image{images[0]}.ome.zarr", f"image{images[2]}.ome.zarr"]
    again = RecordingExport()
    paths = side_for(server, again, workers=1).export(make_run(images), tmp_path / "in")
    assert [c[0] for c in again.calls] == [images[1]]
    assert len(paths) == 3 and all((p / "zarr.json").is_file() for p in paths)


def test_export_runs_several_images_at_once_but_never_more_than_the_bound(
    server: StandInServer, tmp_path: Path
) -> None:
    images = [server.add_image("alice", GROUP, f"img {n}") for n in range(4)]
    export = RecordingExport(barrier=threading.Barrier(2, timeout=10))
    side_for(server, export, workers=2).export(make_run(images), tmp_path / "in")
    assert export.most_active == 2
    assert len(export.calls) == 4


def test_export_as_the_runs_user_cannot_read_another_users_images(
    server: StandInServer, tmp_path: Path
) -> None:
    private = server.add_image("alice", GROUP, "alice only")
    run = make_run([private], user="bob", group=OTHER_GROUP)
    with pytest.raises(OmeroError, match=f"Image {private} does not exist or you may not read it"):
        side_for(server).export(run, tmp_path / "in")
    assert ("admin", "suConn", ("bob", "other-lab", 6 * 3600 * 1000)) in server.calls


# -- import --------------------------------------------------------------------------


def imported(
    server: StandInServer, tmp_path: Path, outputs: dict[str, Any], n_images: int = 1
) -> tuple[dict[str, Any], list[int], dict[str, Any]]:
    images = [server.add_image("alice", GROUP, f"cells {n}.tif") for n in range(n_images)]
    paths = exported(server, tmp_path, images)
    results = write_results(tmp_path / "out", images[0])
    run = make_run(images, outputs=outputs, export_paths=paths)
    summary = side_for(server).import_results(run, results)
    return run, images, summary


def test_import_puts_label_images_in_a_new_dataset_named_after_the_source(
    server: StandInServer, tmp_path: Path
) -> None:
    _, _images, summary = imported(server, tmp_path, {"new_dataset": "nuclei results"})
    (dataset,) = server.of_type("DatasetI")
    assert dataset.getName().getValue() == "nuclei results"
    assert summary["dataset_id"] == dataset.getId().getValue()
    (new_id,) = summary["images"]
    assert server.dataset_images[summary["dataset_id"]] == [new_id]
    new = server.objects[new_id]
    assert new.getName().getValue() == "cells 0_labels.tif"
    assert np.array_equal(server.image_pixels(new_id)[0, 0, 0], LABELS)


def test_import_turns_csv_into_a_typed_omero_table(server: StandInServer, tmp_path: Path) -> None:
    _, _, summary = imported(server, tmp_path, {"new_dataset": "r", "csv_as_table": True})
    (table,) = server.tables.values()
    assert [type(c).__name__ for c in table.columns] == [
        "StringColumn",
        "LongColumn",
        "LongColumn",
        "DoubleColumn",
    ]
    assert table.rows[2] == ["image1", 7, 40, 1.25]
    assert np.isnan(table.rows[1][3])
    assert table.closed
    bulk = [
        a
        for a in server.of_type("FileAnnotationI")
        if a.getNs().getValue().endswith("bulk_annotations")
    ]
    assert len(bulk) == 1 and summary["tables"] == 1


def test_import_attaches_other_files_and_csv_when_no_table_is_wanted(
    server: StandInServer, tmp_path: Path
) -> None:
    _, _, summary = imported(server, tmp_path, {"new_dataset": "r", "csv_as_table": False})
    names = sorted(f.getName().getValue() for f in server.of_type("OriginalFileI"))
    assert names == [f"image{1}_objects.csv", "run-report.txt"]
    assert summary["attachments"] == 2 and summary["tables"] == 0


def test_import_attaches_result_images_to_their_original(
    server: StandInServer, tmp_path: Path
) -> None:
    _, images, _ = imported(server, tmp_path, {"attach_to_originals": True, "csv_as_table": False})
    links = server.of_type("ImageAnnotationLinkI")
    attached = [
        link
        for link in links
        if type(link.getChild()).__name__ == "FileAnnotationI"
        and link.getChild().getDescription().getValue().endswith("_labels.tif")
    ]
    assert [link.getParent().getId().getValue() for link in attached] == [images[0]]


def test_import_makes_one_roi_per_label_on_the_source_image(
    server: StandInServer, tmp_path: Path
) -> None:
    _, images, summary = imported(server, tmp_path, {"rois_from_labels": True, "roi_shape": "Mask"})
    rois = server.of_type("RoiI")
    assert len(rois) == 3 and summary["rois"] == 3
    assert {r.getImage().getId().getValue() for r in rois} == {images[0]}
    texts = sorted(r.copyShapes()[0].getTextValue().getValue() for r in rois)
    assert texts == ["1", "2", "7"]
    mask = next(r for r in rois if r.copyShapes()[0].getTextValue().getValue() == "2").copyShapes()[
        0
    ]
    assert (mask.getX().getValue(), mask.getY().getValue()) == (30, 20)
    assert (mask.getWidth().getValue(), mask.getHeight().getValue()) == (5, 10)


def test_import_writes_provenance_with_run_workflow_version_parameters_and_jobs(
    server: StandInServer, tmp_path: Path
) -> None:
    _run, _, _ = imported(server, tmp_path, {"new_dataset": "r"})
    anns = [
        dict((nv.name, nv.value) for nv in a.getMapValue())
        for a in server.of_type("MapAnnotationI")
        if a.getNs().getValue() == prov.NS_WORKFLOW
    ]
    assert anns and all(a["run_id"] == RUN_ID for a in anns)
    image_ann = next(a for a in anns if a["kind"] == "image")
    assert image_ann["workflow"] == "nuclei" and image_ann["version"] == "v1.2.0"
    assert image_ann["param.sigma"] == "1.5" and image_ann["job_ids"] == "4711"
    task_ns = [
        a
        for a in server.of_type("MapAnnotationI")
        if a.getNs().getValue() == "biomero/workflow/task/nuclei"
    ]
    assert len(task_ns) == 1
    assert ("slurm_job_id", "4711") in [(nv.name, nv.value) for nv in task_ns[0].getMapValue()]


def test_everything_imported_belongs_to_the_runs_user_and_group(
    server: StandInServer, tmp_path: Path
) -> None:
    imported(server, tmp_path, {"new_dataset": "r", "rois_from_labels": True})
    created = {server.owner_of(o) for o in server.objects.values()}
    assert created == {("alice", GROUP)}


def test_importing_twice_leaves_one_set_of_results(server: StandInServer, tmp_path: Path) -> None:
    outputs = {"new_dataset": "r", "rois_from_labels": True, "attach_to_originals": True}
    run, _images, first = imported(server, tmp_path, outputs)
    before = sorted(type(o).__name__ for o in server.objects.values())
    second = side_for(server).import_results(run, tmp_path / "out")
    assert sorted(type(o).__name__ for o in server.objects.values()) == before
    assert second["images"] == [] and second["skipped"] >= 5
    assert second["dataset_id"] == first["dataset_id"]


@pytest.mark.parametrize("crash_at", ["setTile", "newTable", "saveAndReturnArray"])
def test_a_crash_mid_import_then_a_rerun_ends_with_exactly_one_set(
    server: StandInServer, tmp_path: Path, crash_at: str
) -> None:
    images = [server.add_image("alice", GROUP, "cells.tif")]
    paths = exported(server, tmp_path, images)
    results = write_results(tmp_path / "out", images[0])
    outputs = {"new_dataset": "r", "rois_from_labels": True, "attach_to_originals": True}
    run = make_run(images, outputs=outputs, export_paths=paths)
    server.crash_after(crash_at)
    with pytest.raises(StandInCrash):
        side_for(server).import_results(run, results)
    side_for(server).import_results(run, results)
    result_images = [i for i in server.of_type("ImageI") if i.getId().getValue() not in images]
    assert len(result_images) == 1
    conn_runs = run_annotations(_session(server), RUN_ID)
    kinds = sorted(a["kind"] for a in conn_runs)
    assert kinds == ["attachment", "attachment", "dataset", "image", "rois", "run", "table"]
    assert len(server.of_type("RoiI")) == 3
    half_made_image = crash_at in ("setTile", "saveAndReturnArray")
    assert any(call == "deleteObjects" for _, call, _ in server.calls) == half_made_image


def _session(server: StandInServer) -> Any:
    return server.session_as("alice", "lab")


def test_import_into_a_chosen_dataset_of_another_user_is_refused(
    server: StandInServer, tmp_path: Path
) -> None:
    theirs = server.add_dataset("bob", OTHER_GROUP, "bob's", [])
    with pytest.raises(OmeroError, match=f"Dataset {theirs} does not exist"):
        imported(server, tmp_path, {"dataset_id": theirs})


# -- through the RunEngine (the supervisor's path) ------------------------------------


def test_the_run_engine_exports_and_imports_an_omero_run_through_omero_side(
    server: StandInServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biomeroworker.config import load_settings
    from biomeroworker.runs import RunEngine, Step, next_step
    from biomeroworker.tracking.application import Tracker
    from biomeroworker.transport.local import LocalTransport

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = nowhere\n[SLURM]\nslurm_data_path = d\nslurm_images_path = i\n"
        "slurm_converters_path = c\nslurm_script_path = s\n"
    )
    image = server.add_image("alice", GROUP, "cells.tif")
    with Tracker(f"sqlite:///{tmp_path / 't.sqlite'}") as tracker:
        run_id = tracker.record_run_requested(
            workflow="nuclei",
            version="local",
            user_name="alice",
            inputs={"source": "omero", "data_type": "Image", "ids": [image],
                    "outputs": {"new_dataset": "results"}},
            omero_user_id=1,
            omero_group_id=GROUP,
        )  # fmt: skip
        engine = RunEngine(
            load_settings([config], env={}),
            LocalTransport(home=tmp_path),
            tracker,
            data_sides={"omero": side_for(server)},
        )
        assert engine.advance(tracker.run_record(run_id)) is Step.EXPORT
        run = tracker.run_record(run_id)
        assert next_step(run) is Step.STAGE_UP
        (exported_path,) = run.tasks[0].result_locations
        assert Path(exported_path).name == f"image{image}.ome.zarr"
        write_results(engine.output_dir(run), image)
        engine.import_results(run)
        (task,) = [t for t in tracker.get_run(run_id)["tasks"] if t["kind"] == "import"]
        summary = json.loads(task["result_locations"][0])
        assert task["state"] == "COMPLETED" and len(summary["images"]) == 1


# -- what a real server would refuse or choke on ------------------------------------------


def test_labels_that_do_not_fit_their_source_make_no_rois_after_a_real_export(
    server: StandInServer, tmp_path: Path
) -> None:
    image = server.add_image("alice", GROUP, "small.tif", size_x=20, size_y=10)
    paths = exported(server, tmp_path, [image])
    results = write_results(tmp_path / "out", image)  # 64x48 labels
    run = make_run([image], outputs={"rois_from_labels": True}, export_paths=paths)
    summary = side_for(server).import_results(run, results)
    assert summary["rois"] == 0
    assert any("64x48 labels do not fit" in p for p in summary["problems"])


def test_a_label_image_above_the_max_plane_size_is_imported_in_pyramid_tiles(
    server: StandInServer, tmp_path: Path
) -> None:
    image = server.add_image("alice", GROUP, "big.tif", size_x=3300, size_y=40)
    paths = exported(server, tmp_path, [image])
    big = np.zeros((40, 3300), dtype=np.uint16)
    big[5:30, 3000:3290] = 4
    results = tmp_path / "out"
    results.mkdir()
    tifffile.imwrite(results / f"image{image}_labels.tif", big)
    run = make_run([image], outputs={"new_dataset": "r"}, export_paths=paths)
    summary = side_for(server).import_results(run, results)
    (new_id,) = summary["images"]
    assert np.array_equal(server.image_pixels(new_id)[0, 0, 0], big)
    tiles = [c for c in server.calls if c[1] == "setTile"]
    assert len(tiles) == 13  # 256x256 tiles, in order (the stand-in refuses anything else)
    assert not [c for c in server.calls if c[1] == "uploadPlane"]


def test_whole_plane_upload_cannot_write_a_pyramid_which_is_why_we_tile(
    server: StandInServer,
) -> None:
    import omero

    conn = server.session_as("alice", "lab")
    plane = np.zeros((10, 3300), dtype=np.uint16)
    with pytest.raises(omero.ApiUsageException, match="write tiles"):
        conn.createImageFromNumpySeq(iter([plane]), "big", 1, 1, 1)


@pytest.mark.parametrize(
    "dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64"]
)
def test_result_pixel_types_agree_with_omero_pys_own_mapping(
    server: StandInServer, dtype: str
) -> None:
    from biomeroworker.omero.results import PIXEL_TYPES, storage_dtype

    conn = server.session_as("alice", "lab")
    conn.createImageFromNumpySeq(iter([np.zeros((4, 5), dtype=dtype)]), "t", 1, 1, 1)
    (created,) = [detail for _, call, detail in server.calls if call == "createImage"]
    assert created[1] == PIXEL_TYPES[storage_dtype(np.dtype(dtype)).name]


def test_float16_results_are_stored_as_float_with_their_values(
    server: StandInServer, tmp_path: Path
) -> None:
    image = server.add_image("alice", GROUP, "src.tif")
    paths = exported(server, tmp_path, [image])
    results = tmp_path / "out"
    results.mkdir()
    values = (np.arange(48 * 64).reshape(48, 64) / 7).astype(np.float16)
    tifffile.imwrite(results / f"image{image}_prob.tif", values)
    run = make_run([image], outputs={"new_dataset": "r"}, export_paths=paths)
    (new_id,) = side_for(server).import_results(run, results)["images"]
    stored = server.image_pixels(new_id)[0, 0, 0]
    assert stored.dtype == np.float32
    assert np.array_equal(stored, values.astype(np.float32))


def test_a_plane_over_the_read_limit_is_one_files_problem_and_the_rest_imports(
    server: StandInServer, tmp_path: Path
) -> None:
    image = server.add_image("alice", GROUP, "src.tif")
    paths = exported(server, tmp_path, [image])
    results = write_results(tmp_path / "out", image)
    run = make_run([image], outputs={"new_dataset": "r"}, export_paths=paths)
    summary = side_for(server, max_plane_bytes=1024).import_results(run, results)
    assert summary["images"] == [] and summary["tables"] == 1 and summary["attachments"] == 1
    (problem,) = summary["problems"]
    assert problem.startswith(f"image{image}_labels.tif: one plane is 0 MiB, over the")


def test_a_big_csv_streams_into_the_table_in_chunks(server: StandInServer, tmp_path: Path) -> None:
    image = server.add_image("alice", GROUP, "src.tif")
    paths = exported(server, tmp_path, [image])
    results = tmp_path / "out"
    results.mkdir()
    rows = "".join(f"{n},{n * 0.5},cell {n}\n" for n in range(25_000))
    (results / f"image{image}_objects.csv").write_text("label,area,name\n" + rows)
    run = make_run([image], outputs={"new_dataset": "r"}, export_paths=paths)
    side_for(server).import_results(run, results)
    (table,) = server.tables.values()
    assert table.chunks == 3 and len(table.rows) == 25_000
    assert table.rows[-1] == [24_999, 12_499.5, "cell 24999"]


def test_a_half_imported_image_is_deleted_and_waited_for_before_it_is_made_again(
    server: StandInServer, tmp_path: Path
) -> None:
    images = [server.add_image("alice", GROUP, "cells.tif")]
    paths = exported(server, tmp_path, images)
    results = write_results(tmp_path / "out", images[0])
    run = make_run(images, outputs={"new_dataset": "r"}, export_paths=paths)
    server.crash_after("setTile")
    with pytest.raises(StandInCrash):
        side_for(server).import_results(run, results)
    server.delete_polls = 3  # the delete runs for a while on the server
    summary = side_for(server).import_results(run, results)
    assert len(summary["images"]) == 1
    assert len([i for i in server.of_type("ImageI") if i.getId().getValue() not in images]) == 1


def test_a_delete_still_running_after_the_wait_is_retried_and_a_refused_one_is_an_error(
    server: StandInServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biomeroworker.omero import importer

    images = [server.add_image("alice", GROUP, "cells.tif")]
    paths = exported(server, tmp_path, images)
    results = write_results(tmp_path / "out", images[0])
    run = make_run(images, outputs={"new_dataset": "r"}, export_paths=paths)
    server.crash_after("setTile")
    with pytest.raises(StandInCrash):
        side_for(server).import_results(run, results)
    monkeypatch.setattr(importer, "DELETE_POLLS", 2)
    server.delete_polls = 5
    with pytest.raises(ConnectError, match="still running"):
        side_for(server).import_results(run, results)
    server.delete_polls, server.refuse_deletes = 1, True
    summary = side_for(server).import_results(run, results)
    assert summary["images"] == []
    assert any("OMERO refused to delete Image" in p for p in summary["problems"])


# -- the four kinds of OMERO group ---------------------------------------------------------

PERMISSIONS = {"read-only": "rwr---", "read-annotate": "rwra--", "read-write": "rwrw--"}


def colleagues(kind: str) -> StandInServer:
    s = StandInServer()
    s.add_user("biomero-sudo", 0, password="s3cret", privileges=("Sudo",))
    s.add_user("alice", GROUP, "lab", permissions=PERMISSIONS.get(kind, "rw----"))
    s.add_user("bob", GROUP)
    return s


def test_in_a_private_group_a_colleagues_image_cannot_even_be_read(tmp_path: Path) -> None:
    server = colleagues("private")
    theirs = server.add_image("bob", GROUP, "bob's.tif")
    with pytest.raises(OmeroError, match="does not exist or you may not read it"):
        side_for(server).export(make_run([theirs]), tmp_path / "in")


@pytest.mark.parametrize(
    ("kind", "annotates", "links"),
    [
        ("read-only", False, False),
        ("read-annotate", True, False),
        ("read-write", True, True),
    ],
)
def test_results_on_a_colleagues_data_follow_the_groups_permissions(
    tmp_path: Path, kind: str, annotates: bool, links: bool
) -> None:
    server = colleagues(kind)
    theirs = server.add_image("bob", GROUP, "bob's.tif")
    their_dataset = server.add_dataset("bob", GROUP, "bob's results", [])
    paths = exported(server, tmp_path, [theirs])
    results = write_results(tmp_path / "out", theirs)
    outputs = {"dataset_id": their_dataset, "attach_to_originals": True, "rois_from_labels": True}
    run = make_run([theirs], outputs=outputs, export_paths=paths)
    summary = side_for(server).import_results(run, results)

    assert summary["rois"] == (3 if annotates else 0)
    on_their_image = [
        link
        for link in server.of_type("ImageAnnotationLinkI")
        if link.getParent().getId().getValue() == theirs
        and type(link.getChild()).__name__ == "FileAnnotationI"
    ]
    assert bool(on_their_image) == annotates
    (new_image,) = summary["images"]
    in_their_dataset = new_image in server.dataset_images[their_dataset]
    assert in_their_dataset == links
    refused = [p for p in summary["problems"] if "SecurityViolation" in p]
    assert bool(refused) == (not links)
    if not links:  # what the group refused is in a dataset of alice's own instead
        (own,) = [d for d in server.of_type("DatasetI", owner="alice")]
        assert own.getName().getValue() == f"nuclei results (run {RUN_ID[:8]})"
        assert new_image in server.dataset_images[own.getId().getValue()]
    assert {server.owner_of(o) for o in server.objects.values() if o.getId().getValue() > theirs
            and server.owner_of(o)[0] != "bob"} == {("alice", GROUP)}  # fmt: skip
    again = side_for(server).import_results(run, results)
    assert again["images"] == [] and again["rois"] == 0


def test_the_optional_omero_settings_reach_the_side_and_bad_values_are_refused() -> None:
    from biomeroworker.errors import ConfigError

    env = {"OMERO_HOST": "h", "OMERO_USER": "sudo", "OMERO_PASSWORD": "pw"}
    side = OmeroSide.from_env(
        {
            **env,
            "BIOMERO_OMERO_MAX_PLANE_MB": "3",
            "BIOMERO_OMERO_EXPORT_WORKERS": "4",
            "BIOMERO_OMERO_ZARR_FORMAT": "0.5",
        }
    )
    assert (side.max_plane_bytes, side.export_workers, side.zarr_format) == (3 << 20, 4, "0.5")
    with pytest.raises(ConfigError, match="BIOMERO_OMERO_MAX_PLANE_MB must be a whole number"):
        OmeroSide.from_env({**env, "BIOMERO_OMERO_MAX_PLANE_MB": "lots"})
