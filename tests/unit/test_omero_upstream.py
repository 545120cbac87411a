"""The Run Workflow inputs upstream declares beyond ours: each is done, or named."""

from __future__ import annotations

import types

import omero.clients  # noqa: F401  (omero.model needs it loaded first)
import pytest
from omero_standins import StandInServer

from biomeroworker.omero import upstream
from biomeroworker.omero.importer import ImportOptions

GROUP = 3


def test_defaults_and_plugin_defaults_give_no_notes() -> None:
    plugin_defaults = {
        upstream.EMAIL: True,
        upstream.USE_ZARR: False,
        upstream.ZARR_VERSION: "0.4",
        upstream.SELECT_IMPORT: True,
        upstream.OUTPUT_ZIP_TO_PARENT: False,
        upstream.OUTPUT_NEW_SCREEN: upstream.NO,
        upstream.OUTPUT_DUPLICATES: False,
        upstream.OUTPUT_RENAME: upstream.NO,
        upstream.OUTPUT_ATTACH_FILES: True,
        upstream.ROI_LABEL_PATTERN: "",
        upstream.ROI_COLOR: "",
    }
    assert upstream.notes({}) == []
    assert upstream.notes(plugin_defaults) == []


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({upstream.USE_ZARR: True, upstream.ZARR_VERSION: "0.5"}, "OME-Zarr_version '0.5': not"),
        ({upstream.OUTPUT_ZIP_TO_PARENT: True}, "1) Zip attachment to parent: not supported"),
        ({upstream.OUTPUT_NEW_SCREEN: "s"}, "3a) Import into NEW Screen / Screen_ID: not"),
        ({upstream.OUTPUT_SCREEN_ID: 4}, "3a) Import into NEW Screen / Screen_ID: not"),
        ({upstream.OUTPUT_RENAME: "{file}.{ext}"}, "3c) Rename the imported images: not"),
        ({upstream.OUTPUT_ATTACH_FILES: False}, "5) Attach individual non-image output files"),
        ({upstream.ROI_LABEL_PATTERN: "*"}, "6b) Label image pattern '*': not supported"),
        ({upstream.ROI_COLOR: "#FF0000"}, "6g) ROI color override: not supported"),
        ({upstream.ROI_DELETE_LABELS: True}, "6d) Delete label images after ROI creation"),
        ({upstream.ROI_CLEAR_EXISTING: True}, "6e) Clear existing ROIs on original images"),
        ({upstream.ROI_CLEAR_FILTER: "old"}, "6e) Clear existing ROIs on original images"),
    ],
)
def test_a_choice_not_carried_out_is_named_with_what_happens_instead(
    given: dict[str, object], named: str
) -> None:
    (note,) = upstream.notes(given)
    assert note.startswith(named)


@pytest.fixture
def server() -> StandInServer:
    s = StandInServer()
    s.add_user("alice", GROUP, "lab")
    s.add_user("bob", GROUP, "lab")
    return s


def test_without_3b_an_existing_dataset_of_that_name_takes_the_results(
    server: StandInServer,
) -> None:
    older = server.add_dataset("alice", GROUP, "results", [])
    server.add_dataset("alice", GROUP, "results", [])
    server.add_dataset("bob", GROUP, "results", [])
    session = server.session_as("alice", "lab")
    options, note = upstream.existing_dataset(session, {}, ImportOptions(new_dataset="results"))
    assert (options.new_dataset, options.dataset_id) == (None, older)
    assert note and f"(Dataset {older})" in note


def test_with_3b_or_a_new_name_a_new_dataset_is_made(server: StandInServer) -> None:
    server.add_dataset("alice", GROUP, "results", [])
    session = server.session_as("alice", "lab")
    asked = ImportOptions(new_dataset="results")
    dup = {upstream.OUTPUT_DUPLICATES: True}
    assert upstream.existing_dataset(session, dup, asked) == (asked, None)
    fresh = ImportOptions(new_dataset="fresh")
    assert upstream.existing_dataset(session, {}, fresh) == (fresh, None)


@pytest.mark.parametrize(
    ("address", "expected", "says"),
    [
        ("alice@example.org", "alice@example.org", "a message goes to alice@example.org"),
        ("", None, "has no e-mail address"),
        ("None", None, "has no e-mail address"),
    ],
)
def test_e_mail_uses_the_address_of_the_omero_profile(
    address: str, expected: str | None, says: str
) -> None:
    conn = types.SimpleNamespace(getUser=lambda: types.SimpleNamespace(getEmail=lambda: address))
    found, note = upstream.notify_address(conn, {upstream.EMAIL: True})
    assert found == expected and note is not None and says in note
    assert upstream.notify_address(conn, {upstream.EMAIL: False}) == (None, None)


def test_a_screen_runs_on_its_plates_as_upstream(server: StandInServer) -> None:
    from biomeroworker.errors import BiomeroError
    from biomeroworker.omero.actions import screens_as_plates

    plates = [server.add_plate("alice", GROUP, f"p{n}", []) for n in range(2)]
    session = server.session_as("alice", "lab")
    wrappers = [session.getObject("Plate", p) for p in plates]
    screen = types.SimpleNamespace(listChildren=lambda: iter(wrappers))
    real_get = session.getObject
    session.getObject = lambda kind, oid: (
        screen if (kind, oid) == ("Screen", 9) else real_get(kind, oid)
    )
    assert screens_as_plates(session, "Screen", [9]) == ("Plate", plates)
    assert screens_as_plates(session, "Image", [4]) == ("Image", [4])
    with pytest.raises(BiomeroError, match=r"Screen 8 not found"):
        screens_as_plates(session, "Screen", [8])
