"""The real omero-cli-zarr image_to_zarr over omero-py's real wrappers, several at once.

Only the Ice services underneath (the raw pixels store and the rendering engine) are
stood in for (tests/omero_standins.py). The stand-in store can hold every thread at
setPixelsId until all have set theirs, which is the moment two exports sharing one
connection's cached store would swap pixels.
"""

from __future__ import annotations

import contextlib
import threading
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import zarr
from omero_standins import StandInServer

from biomeroworker.omero.connect import OmeroError
from biomeroworker.omero.exporter import export_selection, zarr_exporter
from biomeroworker.omero.results import EXPORT_INDEX, read_index
from biomeroworker.omero.side import OmeroSide
from biomeroworker.run_record import RunInputs, RunRecord

GROUP = 3


@pytest.fixture
def server() -> StandInServer:
    s = StandInServer()
    s.add_user("biomero-sudo", 0, password="s3cret", privileges=("Sudo",))
    s.add_user("alice", GROUP, "lab")
    return s


def side_for(server: StandInServer, workers: int) -> OmeroSide:
    return OmeroSide(server.sudo_connector(), export_workers=workers)


def run_for(image_ids: list[int]) -> RunRecord:
    return RunRecord(
        run_id="r1",
        workflow="wf",
        version="1",
        user="alice",
        omero_group_id=GROUP,
        state="RUNNING",
        inputs=RunInputs({"source": "omero", "data_type": "Image", "ids": image_ids}),
    )


def rendezvous(server: StandInServer, parties: int) -> None:
    """Every setPixelsId waits until ``parties`` threads have called it."""
    barrier = threading.Barrier(parties, timeout=5)

    def wait(_pixels_id: int) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):  # fewer threads left: go on
            barrier.wait()

    server.on_set_pixels_id = wait


def written(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(path / "0"), mode="r")[...])


def test_parallel_exports_each_write_their_own_images_pixels(
    server: StandInServer, tmp_path: Path
) -> None:
    images = [
        server.add_image("alice", GROUP, f"cells {n}.tif", size_x=40 + n, size_y=30)
        for n in range(3)
    ]
    rendezvous(server, 3)
    paths = side_for(server, workers=3).export(run_for(images), tmp_path / "in")
    for image_id, path in zip(images, paths, strict=True):
        assert path.name == f"image{image_id}.ome.zarr"
        assert np.array_equal(written(path), server.image_pixels(image_id)[0, 0, 0])
    index = read_index(tmp_path / "in" / EXPORT_INDEX)
    assert (index[images[2]].size_x, index[images[2]].size_y) == (42, 30)
    sessions = [c for c in server.calls if c[1] == "suConn"]
    assert len(sessions) == 4  # one to find the images, one per export thread


def test_one_shared_connection_would_mix_images_which_is_why_each_thread_has_its_own(
    server: StandInServer, tmp_path: Path
) -> None:
    """The hazard itself, shown with omero-py's code: the same selection exported over
    ONE connection by two threads swaps tiles (or fails on a store another closed)."""
    images = [server.add_image("alice", GROUP, f"cells {n}.tif") for n in range(2)]
    conn = server.session_as("alice", "lab")
    rendezvous(server, 2)
    try:
        paths = export_selection(
            lambda: nullcontext(conn),
            "Image",
            images,
            tmp_path / "in",
            export_fn=zarr_exporter(),
            workers=2,
        )
    except OmeroError:
        return  # a thread's store was closed under it by the other
    mixed = [
        image_id
        for image_id, path in zip(images, paths, strict=True)
        if not np.array_equal(written(path), server.image_pixels(image_id)[0, 0, 0])
    ]
    assert mixed, "two exports on one connection read only their own tiles"


def test_a_multi_channel_z_stack_keeps_its_planes_in_place(
    server: StandInServer, tmp_path: Path
) -> None:
    data = np.arange(1 * 2 * 3 * 20 * 30, dtype=np.uint16).reshape(1, 2, 3, 20, 30)
    image = server.add_image("alice", GROUP, "stack.tif", data=data)
    (path,) = side_for(server, workers=2).export(run_for([image]), tmp_path / "in")
    assert np.array_equal(written(path), data[0])  # T of size 1 is dropped: CZYX
