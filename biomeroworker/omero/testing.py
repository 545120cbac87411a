# ruff: noqa: N802, N803, N815 -- the fake keeps omero-py's method and argument names
"""A fake OMERO server for tests where no real one can run.

``FakeServer`` keeps real omero-py model objects (ImageI, DatasetI, MapAnnotationI, RoiI
...) with an owner and a group each; ``FakeGateway`` is a user's session on it and
answers the BlitzGateway calls the adapter makes, returning omero-py's real wrappers.
A session sees only objects of its own user in its own group (a private group), so a
test can tell whose session did what. Every call is recorded in ``server.calls``.
``FakeAdmin`` plays the admin login that opens sessions for other users (suConn).

Only the two HQL queries the adapter sends are understood; any other query fails the
test. ``crash_after`` makes a named call raise ``FakeCrash`` (the process dying) so
tests can check that a re-run finishes what a crash left.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class FakeCrash(Exception):
    """The worker process died here (raised by a call chosen with crash_after)."""


@dataclass
class _Meta:
    owner: str
    group_id: int


@dataclass
class FakeTable:
    server: FakeServer
    name: str
    file: Any
    columns: list[Any] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    closed: bool = False

    def initialize(self, columns: list[Any]) -> None:
        self.columns = [type(c)(c.name, c.description, *_extra(c)) for c in columns]

    def addData(self, columns: list[Any]) -> None:
        self.rows.extend(list(r) for r in zip(*(c.values for c in columns), strict=True))

    def getOriginalFile(self) -> Any:
        return self.file

    def close(self) -> None:
        self.closed = True


def _extra(column: Any) -> tuple[Any, ...]:
    return (column.size, []) if hasattr(column, "size") else ([],)


class FakeServer:
    def __init__(self) -> None:
        self.objects: dict[int, Any] = {}
        self.meta: dict[int, _Meta] = {}
        self.users: dict[str, int] = {}
        self.groups: dict[int, str] = {}
        self.dataset_images: dict[int, list[int]] = {}
        self.plate_images: dict[int, list[int]] = {}
        self.pixels: dict[int, list[np.ndarray]] = {}
        self.files: dict[int, bytes] = {}
        self.tables: dict[int, FakeTable] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.crashes: dict[str, int] = {}
        self._ids = itertools.count(1)

    # -- set-up ---------------------------------------------------------------------

    def add_user(self, name: str, group_id: int, group_name: str) -> None:
        self.users.setdefault(name, len(self.users) + 1)
        self.groups[group_id] = group_name

    def _own(self, obj: Any, owner: str, group_id: int) -> int:
        from omero.rtypes import rlong

        new_id = next(self._ids)
        obj.setId(rlong(new_id))
        self.objects[new_id] = obj
        self.meta[new_id] = _Meta(owner, group_id)
        return new_id

    def add_image(
        self, owner: str, group_id: int, name: str, *, size_x: int = 64, size_y: int = 48
    ) -> int:
        from omero.model import ImageI, PixelsI
        from omero.rtypes import rint, rstring

        image = ImageI()
        image.setName(rstring(name))
        pixels = PixelsI()
        pixels.setSizeX(rint(size_x))
        pixels.setSizeY(rint(size_y))
        image.addPixels(pixels)
        return self._own(image, owner, group_id)

    def add_dataset(self, owner: str, group_id: int, name: str, image_ids: list[int]) -> int:
        from omero.model import DatasetI
        from omero.rtypes import rstring

        dataset = DatasetI()
        dataset.setName(rstring(name))
        dataset_id = self._own(dataset, owner, group_id)
        self.dataset_images[dataset_id] = list(image_ids)
        return dataset_id

    def add_plate(self, owner: str, group_id: int, name: str, image_ids: list[int]) -> int:
        from omero.model import PlateI
        from omero.rtypes import rstring

        plate = PlateI()
        plate.setName(rstring(name))
        plate_id = self._own(plate, owner, group_id)
        self.plate_images[plate_id] = list(image_ids)
        return plate_id

    def crash_after(self, call: str, count: int = 1) -> None:
        """The ``count``-th call named ``call`` from now on raises FakeCrash."""
        self.crashes[call] = count

    # -- inspection -------------------------------------------------------------------

    def of_type(self, class_name: str, owner: str | None = None) -> list[Any]:
        return [
            obj
            for oid, obj in sorted(self.objects.items())
            if type(obj).__name__ == class_name and (owner is None or self.meta[oid].owner == owner)
        ]

    def owner_of(self, obj: Any) -> _Meta:
        return self.meta[obj.getId().getValue()]

    def record(self, user: str, call: str, detail: Any = None) -> None:
        self.calls.append((user, call, detail))
        if call in self.crashes:
            self.crashes[call] -= 1
            if self.crashes[call] == 0:
                del self.crashes[call]
                raise FakeCrash(call)


class _Service:
    def __init__(self, conn: FakeGateway) -> None:
        self.conn = conn


class FakeQueryService(_Service):
    def projection(self, query: str, params: Any, ctx: Any = None) -> list[list[Any]]:
        from omero.rtypes import rlong, rstring

        from biomeroworker.omero.exporter import PLATE_IMAGES_HQL
        from biomeroworker.omero.importer import RUN_ANNOTATIONS_HQL

        values = {k: v.getValue() for k, v in params.map.items()}
        self.conn.record("projection", values)
        if query == PLATE_IMAGES_HQL:
            return [[rlong(i)] for i in self.conn.server.plate_images.get(values["pid"], [])]
        if query == RUN_ANNOTATIONS_HQL:
            rows = []
            for ann in self.conn.visible("MapAnnotationI"):
                pairs = [(nv.name, nv.value) for nv in ann.getMapValue()]
                if (
                    ann.getNs().getValue() == values["ns"]
                    and (values["key"], values["rid"]) in pairs
                ):
                    rows += [[ann.getId(), rstring(k), rstring(v)] for k, v in pairs]
            return rows
        raise AssertionError(f"FakeQueryService does not know this query: {query}")


class FakeUpdateService(_Service):
    def saveAndReturnObject(self, obj: Any, ctx: Any = None) -> Any:
        self.conn.record("saveAndReturnObject", type(obj).__name__)
        return self.conn.persist(obj)

    def saveAndReturnArray(self, objs: list[Any], ctx: Any = None) -> list[Any]:
        self.conn.record("saveAndReturnArray", [type(o).__name__ for o in objs])
        return [self.conn.persist(o) for o in objs]


class FakeSharedResources(_Service):
    def repositories(self) -> Any:
        from types import SimpleNamespace

        from omero.model import OriginalFileI

        return SimpleNamespace(descriptions=[OriginalFileI(1, False)])

    def newTable(self, repository: int, name: str, ctx: Any = None) -> FakeTable:
        from omero.model import OriginalFileI
        from omero.rtypes import rstring

        self.conn.record("newTable", name)
        file = OriginalFileI()
        file.setName(rstring(name))
        file.setMimetype(rstring("OMERO.tables"))
        file_id = self.conn.server._own(file, self.conn.user, self.conn.group_id)
        table = FakeTable(self.conn.server, name, file)
        self.conn.server.tables[file_id] = table
        return table


class _Client:
    def __init__(self, conn: FakeGateway) -> None:
        class SF:
            def sharedResources(self) -> FakeSharedResources:
                return FakeSharedResources(conn)

        self.sf = SF()


class FakeGateway:
    """One user's session, in one group."""

    def __init__(self, server: FakeServer, user: str, group_id: int) -> None:
        from omero.gateway import ServiceOptsDict

        self.server = server
        self.user = user
        self.group_id = group_id
        self.SERVICE_OPTS = ServiceOptsDict()
        self.c = _Client(self)
        self.closed = False

    def record(self, call: str, detail: Any = None) -> None:
        self.server.record(self.user, call, detail)

    # -- what this session may see ---------------------------------------------------

    def _visible(self, oid: int) -> bool:
        meta = self.server.meta.get(oid)
        return meta is not None and meta.owner == self.user and meta.group_id == self.group_id

    def visible(self, class_name: str) -> list[Any]:
        return [
            obj
            for oid, obj in sorted(self.server.objects.items())
            if type(obj).__name__ == class_name and self._visible(oid)
        ]

    def _wrap(self, obj: Any) -> Any:
        import omero.gateway as g

        wrappers = {
            "ImageI": g.ImageWrapper,
            "DatasetI": g.DatasetWrapper,
            "PlateI": g.PlateWrapper,
            "OriginalFileI": g.OriginalFileWrapper,
        }
        return wrappers[type(obj).__name__](self, obj)

    def getObject(self, kind: str, oid: int) -> Any:
        self.record("getObject", (kind, oid))
        obj = self.server.objects.get(int(oid))
        if obj is None or type(obj).__name__ != kind + "I" or not self._visible(int(oid)):
            return None
        return self._wrap(obj)

    def getObjects(
        self,
        kind: str,
        ids: list[int] | None = None,
        attributes: dict[str, Any] | None = None,
        opts: dict[str, Any] | None = None,
    ) -> Iterator[Any]:
        from omero.rtypes import unwrap

        self.record("getObjects", (kind, ids, attributes, opts))
        found = self.visible(kind + "I")
        if ids is not None:
            found = [o for o in found if o.getId().getValue() in set(ids)]
        if opts and "dataset" in opts:
            members = set(self.server.dataset_images.get(int(opts["dataset"]), []))
            found = [o for o in found if o.getId().getValue() in members]
        for key, value in (attributes or {}).items():
            found = [o for o in found if unwrap(getattr(o, key)) == value]
        return iter([self._wrap(o) for o in found])

    def getQueryService(self) -> FakeQueryService:
        return FakeQueryService(self)

    def getUpdateService(self) -> FakeUpdateService:
        return FakeUpdateService(self)

    # -- writes --------------------------------------------------------------------------

    def persist(self, obj: Any) -> Any:
        """Save a new object graph: ids for every new object, owned by this session."""
        if obj is None or obj.getId() is not None:
            return obj
        self.server._own(obj, self.user, self.group_id)
        if hasattr(obj, "getParent") and hasattr(obj, "getChild"):
            parent_id = obj.getParent().getId()
            if parent_id is not None and not self._visible(parent_id.getValue()):
                raise PermissionError(f"{self.user} may not annotate object {parent_id.getValue()}")
            self.persist(obj.getParent())
            self.persist(obj.getChild())
        if hasattr(obj, "isAnnotationLinksLoaded") and obj.isAnnotationLinksLoaded():
            for link in obj.copyAnnotationLinks():
                self.persist(link)
        if type(obj).__name__ == "RoiI":
            image_id = obj.getImage().getId().getValue()
            if not self._visible(image_id):
                raise PermissionError(f"{self.user} may not add ROIs to Image {image_id}")
            for shape in obj.copyShapes():
                self.persist(shape)
        return obj

    def createOriginalFileFromLocalFile(
        self,
        path: str,
        origFilePathAndName: str | None = None,
        mimetype: str | None = None,
        ns: str | None = None,
    ) -> Any:
        from omero.model import OriginalFileI
        from omero.rtypes import rstring

        self.record("createOriginalFileFromLocalFile", Path(path).name)
        file = OriginalFileI()
        file.setName(rstring(Path(path).name))
        file.setMimetype(rstring(mimetype or ""))
        file_id = self.server._own(file, self.user, self.group_id)
        self.server.files[file_id] = Path(path).read_bytes()
        return self._wrap(file)

    def createImageFromNumpySeq(
        self,
        planes: Iterator[np.ndarray],
        imageName: str,
        sizeZ: int = 1,
        sizeC: int = 1,
        sizeT: int = 1,
        description: str | None = None,
        dataset: Any = None,
        sourceImageId: int | None = None,
        channelList: list[int] | None = None,
    ) -> Any:
        from omero.model import ImageI, PixelsI
        from omero.rtypes import rint, rstring

        self.record("createImageFromNumpySeq", imageName)
        image = ImageI()
        image.setName(rstring(imageName))
        image.setDescription(rstring(description or ""))
        pixels = PixelsI()
        pixels.setSizeZ(rint(sizeZ))
        pixels.setSizeC(rint(sizeC))
        pixels.setSizeT(rint(sizeT))
        image.addPixels(pixels)
        image_id = self.server._own(image, self.user, self.group_id)
        stored = []
        for n in range(sizeZ * sizeC * sizeT):
            plane = next(planes)
            if n == 0:
                pixels.setSizeY(rint(plane.shape[0]))
                pixels.setSizeX(rint(plane.shape[1]))
            self.record("uploadPlane", (image_id, n))
            stored.append(np.array(plane))
        self.server.pixels[image_id] = stored
        if dataset is not None:
            self.server.dataset_images.setdefault(int(dataset.getId()), []).append(image_id)
        return self._wrap(image)

    def deleteObjects(
        self,
        kind: str,
        ids: list[int],
        deleteAnns: bool = False,
        deleteChildren: bool = False,
        dryRun: bool = False,
        wait: bool = False,
    ) -> None:
        self.record("deleteObjects", (kind, sorted(ids)))
        for oid in ids:
            if not self._visible(oid):
                raise PermissionError(f"{self.user} may not delete {kind} {oid}")
            del self.server.objects[oid]
            for members in self.server.dataset_images.values():
                if oid in members:
                    members.remove(oid)

    # -- session -----------------------------------------------------------------------

    def getEventContext(self) -> Any:
        class Context:
            userName = self.user
            userId = self.server.users.get(self.user, 0)
            groupId = self.group_id

        return Context()

    def close(self, hard: bool = True) -> None:
        self.record("close")
        self.closed = True


class FakeAdmin:
    """The admin login: opens sessions for other users like BlitzGateway.suConn."""

    def __init__(self, server: FakeServer, *, admin: bool = True, reachable: bool = True) -> None:
        self.server = server
        self.admin = admin
        self.reachable = reachable
        self.sessions: list[FakeGateway] = []
        self.connected = False

    def connect(self) -> bool:
        self.connected = self.reachable
        return self.connected

    def keepAlive(self) -> bool:
        return self.connected

    def isAdmin(self) -> bool:
        return self.admin

    def getObject(self, kind: str, oid: int) -> Any:
        import omero.gateway as g
        from omero.model import ExperimenterGroupI
        from omero.rtypes import rstring

        if kind != "ExperimenterGroup" or int(oid) not in self.server.groups:
            return None
        group = ExperimenterGroupI(int(oid), True)
        group.setName(rstring(self.server.groups[int(oid)]))
        return g.ExperimenterGroupWrapper(self, group)

    def suConn(self, username: str, group: str | None = None, ttl: int = 60000) -> Any:
        self.server.record("admin", "suConn", (username, group, ttl))
        if username not in self.server.users:
            return None
        group_ids = [gid for gid, name in self.server.groups.items() if name == group]
        session = FakeGateway(self.server, username, group_ids[0] if group_ids else 0)
        self.sessions.append(session)
        return session

    def close(self) -> None:
        self.connected = False
