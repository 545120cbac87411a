# ruff: noqa: N802, N803 -- stand-ins keep the Ice services' method and argument names
"""Stand-ins for what an OMERO server gives omero-py over Ice, and nothing above that.

The adapter's tests run omero-py's own code: ``BlitzGateway`` (connect, suConn,
getObject/getObjects and the HQL they build, createImageFromNumpySeq, deleteObjects,
createOriginalFileFromLocalFile), its wrappers (ImageWrapper, PixelsWrapper with its
cached raw pixels store, ChannelWrapper) and omero-cli-zarr's ``image_to_zarr``. Only
the layer those call is stood in for: ``StandInClient`` replaces ``omero.client`` (the
Ice communicator and Glacier2 session) and hands out stand-in services (query, update,
pixels, raw pixels store, raw file store (write and read), rendering engine, sessions,
admin, OMERO.tables, commands).
``StandInServer.gateway_class()`` is BlitzGateway with one method changed: the one that
makes the ``omero.client``.

The server keeps real omero-py model objects with real details (owner, group and the
group's permissions). Groups are private (rw----), read-only (rwr---), read-annotate
(rwra--) or read-write (rwrw--), as in OMERO: a session sees its group's objects (in a
private group only its own), may annotate others' objects only in read-annotate and
read-write groups, and may link into others' containers only in read-write groups.
Anything else raises the real ``omero.SecurityViolation``.

The query service understands the HQL that BlitzGateway.buildQuery writes (entity,
ids, attributes, the dataset filter, owner) and the adapter's own queries; any other
query fails the test. ``crash_after`` makes a named call raise ``StandInCrash``
(the worker process dying) so tests can check that a re-run finishes the job.
"""

from __future__ import annotations

import itertools
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import Glacier2
import Ice
import numpy as np
import omero
import omero.clients
import omero.gateway
from omero.model import (
    AdminPrivilegeI,
    ChannelI,
    DatasetI,
    DetailsI,
    ExperimenterGroupI,
    ExperimenterI,
    FamilyI,
    ImageI,
    LogicalChannelI,
    PermissionsI,
    PixelsI,
    PixelsTypeI,
    PlateI,
    RenderingModelI,
    SessionI,
    StatsInfoI,
)
from omero.rtypes import rdouble, rint, rlong, rstring, unwrap

PRIVATE, READ_ONLY, READ_ANNOTATE, READ_WRITE = "rw----", "rwr---", "rwra--", "rwrw--"
GROUP_TYPES = (PRIVATE, READ_ONLY, READ_ANNOTATE, READ_WRITE)
ALL_PRIVILEGES = ("Chgrp", "Chown", "DeleteOwned", "ModifyUser", "Sudo", "WriteOwned")
# OMERO's defaults: planes above 3192x3192 are pyramids, written in 256x256 tiles.
MAX_PLANE = (3192, 3192)
PYRAMID_TILE = (256, 256)
NUMPY_TYPES = {
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "float": np.float32,
    "double": np.float64,
}


class StandInCrash(Exception):
    """The worker process died here (raised by a call chosen with crash_after)."""


def security_violation(message: str) -> omero.SecurityViolation:
    return omero.SecurityViolation(
        serverStackTrace="",
        serverExceptionClass="ome.conditions.SecurityViolation",
        message=message,
    )


def api_usage(message: str) -> omero.ApiUsageException:
    return omero.ApiUsageException(
        serverStackTrace="",
        serverExceptionClass="ome.conditions.ApiUsageException",
        message=message,
    )


@dataclass
class Group:
    name: str
    permissions: str


@dataclass
class Session:
    uuid: str
    user: str
    group_id: int


@dataclass
class StandInTable:
    name: str
    file: Any
    columns: list[Any] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    chunks: int = 0
    closed: bool = False

    def initialize(self, columns: list[Any]) -> None:
        self.columns = [type(c)(c.name, c.description, *_extra(c)) for c in columns]

    def addData(self, columns: list[Any]) -> None:
        self.chunks += 1
        self.rows.extend(list(r) for r in zip(*(c.values for c in columns), strict=True))

    def getOriginalFile(self) -> Any:
        return self.file

    def close(self) -> None:
        self.closed = True


def _extra(column: Any) -> tuple[Any, ...]:
    return (column.size, []) if hasattr(column, "size") else ([],)


# -- the server --------------------------------------------------------------------------


class StandInServer:
    def __init__(self) -> None:
        self.reachable = True
        self.users: dict[str, int] = {"root": 0}
        self.passwords: dict[str, str] = {}
        self.privileges: dict[str, tuple[str, ...]] = {"root": ALL_PRIVILEGES}
        self.memberships: dict[str, list[int]] = {"root": [0]}
        self.groups: dict[int, Group] = {0: Group("system", PRIVATE)}
        self.sessions: dict[str, Session] = {}
        self.objects: dict[int, Any] = {}
        self.dataset_images: dict[int, list[int]] = {}
        self.plate_images: dict[int, list[int]] = {}
        self.pixels: dict[int, np.ndarray] = {}  # pixels id -> TCZYX
        self.files: dict[int, bytes] = {}
        self.tables: dict[int, StandInTable] = {}
        self.channel_ranges: dict[tuple[int, int], tuple[float, float]] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.crashes: dict[str, int] = {}
        self.delete_polls = 1  # a delete finishes after this many polls of its handle
        self.refuse_deletes = False
        self.on_set_pixels_id: Callable[[int], None] | None = None
        self.max_message_bytes = 64 * 1024 * 1024  # Ice.MessageSizeMax
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- set-up -----------------------------------------------------------------------

    def add_group(self, group_id: int, name: str, permissions: str = PRIVATE) -> None:
        assert permissions in GROUP_TYPES, permissions
        self.groups[group_id] = Group(name, permissions)

    def add_user(
        self,
        name: str,
        group_id: int,
        group_name: str | None = None,
        *,
        permissions: str = PRIVATE,
        password: str = "pw",  # noqa: S107 -- the stand-in server's test password
        privileges: tuple[str, ...] = (),
    ) -> int:
        if group_id not in self.groups:
            self.add_group(group_id, group_name or f"group-{group_id}", permissions)
        self.users.setdefault(name, len(self.users) + 1)
        self.memberships.setdefault(name, []).append(group_id)
        self.passwords[name] = password
        if privileges:
            self.privileges[name] = privileges
            self.memberships[name].append(0)
        return self.users[name]

    def new_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def own(self, obj: Any, owner: str, group_id: int) -> int:
        new_id = self.new_id()
        obj.setId(rlong(new_id))
        details = DetailsI()
        details.setOwner(ExperimenterI(self.users[owner], False))
        details.setGroup(ExperimenterGroupI(group_id, False))
        details.setPermissions(PermissionsI(self.groups[group_id].permissions))
        obj._details = details
        self.objects[new_id] = obj
        return new_id

    def add_image(
        self,
        owner: str,
        group_id: int,
        name: str,
        *,
        size_x: int = 64,
        size_y: int = 48,
        data: np.ndarray | None = None,
    ) -> int:
        """An image with pixels: ``data`` (TCZYX, or YX) or a ramp unique to the image."""
        image = ImageI()
        image.setName(rstring(name))
        image_id = self.own(image, owner, group_id)
        if data is None:
            data = (np.arange(size_y * size_x, dtype=np.uint16).reshape(size_y, size_x) % 1000) + (
                image_id * 1000
            )
        if data.ndim == 2:
            data = data[np.newaxis, np.newaxis, np.newaxis]
        self._add_pixels(image, owner, group_id, data.shape, str(_pixel_type(data.dtype)))
        self.pixels[image.getPrimaryPixels().getId().getValue()] = np.array(data)
        return image_id

    def _add_pixels(
        self, image: Any, owner: str, group_id: int, shape: tuple[int, ...], ptype: str
    ) -> Any:
        size_t, size_c, size_z, size_y, size_x = shape
        pixels = PixelsI()
        pixels.setSizeX(rint(size_x))
        pixels.setSizeY(rint(size_y))
        pixels.setSizeZ(rint(size_z))
        pixels.setSizeC(rint(size_c))
        pixels.setSizeT(rint(size_t))
        kind = PixelsTypeI()
        kind.setValue(rstring(ptype))
        pixels.setPixelsType(kind)
        for _ in range(size_c):
            channel = ChannelI()
            channel.setLogicalChannel(LogicalChannelI())
            stats = StatsInfoI()
            stats.setGlobalMin(rdouble(0))
            stats.setGlobalMax(rdouble(0))
            channel.setStatsInfo(stats)
            pixels.addChannel(channel)
        self.own(pixels, owner, group_id)
        image.addPixels(pixels)
        return pixels

    def add_dataset(self, owner: str, group_id: int, name: str, image_ids: list[int]) -> int:
        dataset = DatasetI()
        dataset.setName(rstring(name))
        dataset_id = self.own(dataset, owner, group_id)
        self.dataset_images[dataset_id] = list(image_ids)
        return dataset_id

    def add_plate(self, owner: str, group_id: int, name: str, image_ids: list[int]) -> int:
        plate = PlateI()
        plate.setName(rstring(name))
        plate_id = self.own(plate, owner, group_id)
        self.plate_images[plate_id] = list(image_ids)
        return plate_id

    def add_file_annotation(
        self, owner: str, group_id: int, name: str, data: bytes, *, size: int | None = None
    ) -> int:
        """A FileAnnotation with its OriginalFile (``size``: what the file claims, to
        stand in for a file whose bytes differ from its record)."""
        from omero.model import FileAnnotationI, OriginalFileI

        file = OriginalFileI()
        file.setName(rstring(name))
        file.setPath(rstring("/"))
        file.setSize(rlong(len(data) if size is None else size))
        file.setMimetype(rstring("application/octet-stream"))
        file_id = self.own(file, owner, group_id)
        self.files[file_id] = data
        annotation = FileAnnotationI()
        annotation.setFile(file)
        return self.own(annotation, owner, group_id)

    def crash_after(self, call: str, count: int = 1) -> None:
        """The ``count``-th call named ``call`` from now on raises StandInCrash."""
        self.crashes[call] = count

    def gateway_class(self) -> type:
        """omero-py's BlitzGateway, making StandInClients instead of omero.clients."""
        server = self

        class Gateway(omero.gateway.BlitzGateway):  # type: ignore[misc]
            def _resetOmeroClient(self) -> None:
                self.c = StandInClient(server, self.host, self.port)

        return Gateway

    def sudo_connector(self, user: str = "biomero-sudo", password: str = "s3cret") -> Any:  # noqa: S107 -- the stand-in's test password
        """The worker's SudoConnector logging in to this server as ``user`` (an admin
        with Sudo, added by the test), as OmeroSide uses it."""
        from biomeroworker.omero.connect import OmeroServer, SudoConnector

        gateway = self.gateway_class()
        return SudoConnector(
            OmeroServer("omero.example", 4064, user, password),
            gateway=lambda s: gateway(s.user, s.password, host=s.host, port=s.port, secure=True),
        )

    def login(self, user: str, group: str | None = None) -> Any:
        """A connected BlitzGateway for ``user`` (password "pw" unless set)."""
        conn = self.gateway_class()(
            user, self.passwords.get(user, "pw"), host="omero.test", port=4064, group=group
        )
        assert conn.connect(), conn.getLastError()
        return conn

    def session_as(self, user: str, group_name: str) -> Any:
        """A user's session opened the supervisor's way (admin login, then suConn)."""
        self.passwords.setdefault("root", "pw")
        return self.login("root").suConn(user, group_name)

    # -- inspection -------------------------------------------------------------------

    def of_type(self, class_name: str, owner: str | None = None) -> list[Any]:
        uid = None if owner is None else self.users[owner]
        return [
            obj
            for _, obj in sorted(self.objects.items())
            if type(obj).__name__ == class_name
            and (uid is None or obj.getDetails().getOwner().getId().getValue() == uid)
        ]

    def owner_of(self, obj: Any) -> tuple[str, int]:
        details = obj.getDetails()
        uid = details.getOwner().getId().getValue()
        name = next(n for n, i in self.users.items() if i == uid)
        return name, details.getGroup().getId().getValue()

    def image_pixels(self, image_id: int) -> np.ndarray:
        return self.pixels[self.objects[image_id].getPrimaryPixels().getId().getValue()]

    def record(self, user: str, call: str, detail: Any = None) -> None:
        self.calls.append((user, call, detail))
        if call in self.crashes:
            self.crashes[call] -= 1
            if self.crashes[call] == 0:
                del self.crashes[call]
                raise StandInCrash(call)


def _pixel_type(dtype: np.dtype) -> str:
    for name, numpy_type in NUMPY_TYPES.items():
        if np.dtype(numpy_type) == dtype:
            return name
    raise AssertionError(f"no OMERO pixel type for {dtype}")


# -- omero.client -------------------------------------------------------------------------


class _ImplicitContext:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def put(self, key: str, value: str) -> None:
        self.values[key] = value

    def get(self, key: str) -> str:
        return self.values.get(key, "")

    def getContext(self) -> dict[str, str]:
        return dict(self.values)


class _Properties:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def setProperty(self, key: str, value: str) -> None:
        self.values[key] = value

    def getProperty(self, key: str) -> str:
        return self.values.get(key, "")


class _Communicator:
    def __init__(self) -> None:
        self.properties = _Properties()
        self.context = _ImplicitContext()

    def getProperties(self) -> _Properties:
        return self.properties

    def getImplicitContext(self) -> _ImplicitContext:
        return self.context


class StandInClient:
    """What BlitzGateway uses of omero.client: the session and its service factory."""

    def __init__(self, server: StandInServer, host: str | None, port: int | None) -> None:
        self.server = server
        self.host, self.port = host, port
        self.ic = _Communicator()
        self.sf: ServiceFactory | None = None

    def getProperty(self, key: str) -> str:
        return {"omero.host": str(self.host), "omero.port": str(self.port)}.get(key, "")

    def isSecure(self) -> bool:
        return True

    def getImplicitContext(self) -> _ImplicitContext:
        return self.ic.getImplicitContext()

    def setAgent(self, agent: str) -> None:
        pass

    def _check_reachable(self) -> None:
        if not self.server.reachable:
            raise Ice.ConnectionRefusedException()

    def createSession(self, username: str, password: str) -> ServiceFactory:
        self._check_reachable()
        if self.server.passwords.get(username) != password:
            raise Glacier2.PermissionDeniedException("Password check failed")
        wanted = self.ic.context.get(omero.constants.GROUP)
        groups = self.server.memberships.get(username, [])
        group_id = next(
            (g for g in groups if self.server.groups[g].name == wanted), groups[0] if groups else 0
        )
        if wanted and self.server.groups.get(group_id, Group("", "")).name != wanted:
            raise security_violation(f"{username} is not a member of group {wanted}")
        session = Session(str(uuid.uuid4()), username, group_id)
        self.server.sessions[session.uuid] = session
        self.sf = ServiceFactory(self.server, session)
        return self.sf

    def joinSession(self, session_uuid: str) -> ServiceFactory:
        self._check_reachable()
        session = self.server.sessions.get(session_uuid)
        if session is None:
            raise Glacier2.PermissionDeniedException("no such session")
        self.sf = ServiceFactory(self.server, session)
        return self.sf

    def getSessionId(self) -> str:
        if self.sf is None:
            raise omero.ClientError("No session available")
        return self.sf.session.uuid

    def getSession(self) -> ServiceFactory:
        if self.sf is None:
            raise omero.ClientError("No session available")
        return self.sf

    def killSession(self) -> int:
        if self.sf is not None:
            self.server.sessions.pop(self.sf.session.uuid, None)
            self.server.record(self.sf.session.user, "close")
            self.sf = None
        return 1

    def closeSession(self) -> None:
        self.killSession()

    def __del__(self) -> None:
        self.sf = None

    def waitOnCmd(
        self,
        handle: Any,
        loops: int = 10,
        ms: int = 500,
        failonerror: bool = True,
        failontimeout: bool = False,
        closehandle: bool = False,
    ) -> Any:
        """omero.client.waitOnCmd, on a handle whose command finishes after N polls."""
        for _ in range(loops):
            if handle.poll():
                break
        else:
            if failontimeout:
                raise omero.LockTimeout(
                    serverStackTrace="", serverExceptionClass="", message="still running",
                    backOff=5000, seconds=int(loops * ms / 1000),
                )  # fmt: skip
            return handle
        if isinstance(handle.response, omero.cmd.ERR) and failonerror:
            raise omero.CmdError(handle.response)
        return handle


# -- the services -----------------------------------------------------------------------


class ServiceFactory:
    """One session's services (omero.api.ServiceFactory)."""

    def __init__(self, server: StandInServer, session: Session) -> None:
        self.server = server
        self.session = session
        self.user = session.user
        self.uid = server.users[session.user]
        self.group_id = session.group_id
        self.closed_stores: list[RawPixelsStore] = []

    def record(self, call: str, detail: Any = None) -> None:
        self.server.record(self.user, call, detail)

    # what this session may see and do

    def group_of(self, obj: Any) -> int:
        return obj.getDetails().getGroup().getId().getValue()

    def owner_of(self, obj: Any) -> int:
        return obj.getDetails().getOwner().getId().getValue()

    def visible(self, obj: Any) -> bool:
        if obj is None or obj.getDetails() is None or obj.getDetails().getOwner() is None:
            return False
        if self.group_of(obj) != self.group_id:
            return False
        mine = self.owner_of(obj) == self.uid
        return mine or self.server.groups[self.group_id].permissions != PRIVATE

    def may(self, action: str, obj: Any) -> bool:
        """May this session annotate ("annotate") or link into ("link") ``obj``?"""
        if not self.visible(obj):
            return False
        if self.owner_of(obj) == self.uid:
            return True
        perms = self.server.groups[self.group_id].permissions
        if action == "annotate":
            return perms in (READ_ANNOTATE, READ_WRITE)
        return perms == READ_WRITE

    # services

    def getQueryService(self) -> QueryService:
        return QueryService(self)

    def getUpdateService(self) -> UpdateService:
        return UpdateService(self)

    def getPixelsService(self) -> PixelsService:
        return PixelsService(self)

    def getContainerService(self) -> ContainerService:
        return ContainerService(self)

    def getAdminService(self) -> AdminService:
        return AdminService(self)

    def getSessionService(self) -> SessionService:
        return SessionService(self)

    def createRawPixelsStore(self) -> RawPixelsStore:
        return RawPixelsStore(self)

    def createRenderingEngine(self) -> RenderingEngine:
        return RenderingEngine(self)

    def createRawFileStore(self) -> RawFileStore:
        return RawFileStore(self)

    def sharedResources(self) -> SharedResources:
        return SharedResources(self)

    def submit(self, request: Any, ctx: Any = None) -> CommandHandle:
        return CommandHandle(self, request)

    def keepAlive(self, proxy: Any) -> bool:
        return True

    def detachOnDestroy(self) -> None:
        pass

    def setSecurityContext(self, context: Any) -> None:
        self.group_id = context.getId().getValue()


class _Service:
    def __init__(self, sf: ServiceFactory) -> None:
        self.sf = sf
        self.server = sf.server

    def close(self, ctx: Any = None) -> None:
        pass


class QueryService(_Service):
    _FROM = re.compile(r"select obj from (\w+) (?:as )?obj\b")
    _ATTR = re.compile(r"obj\.(\w+)=:(\w+)")

    def findByQuery(self, query: str, params: Any, ctx: Any = None) -> Any:
        found = self.findAllByQuery(query, params, ctx)
        if len(found) > 1:
            raise api_usage("query returned more than one object")
        return found[0] if found else None

    def find(self, kind: str, object_id: int, ctx: Any = None) -> Any:
        obj = self.server.objects.get(int(object_id))
        if obj is None or type(obj).__name__ != kind + "I" or not self.sf.visible(obj):
            return None
        return obj

    def findAllByQuery(self, query: str, params: Any, ctx: Any = None) -> list[Any]:
        values = {k: unwrap(v) for k, v in (params.map if params else {}).items()}
        self.sf.record("query", (query.split(" where ")[0][:40], values))
        kind = re.fullmatch(r"from PixelsType as p where p\.value ?= ?(?:'(\w+)'|:value)", query)
        if kind:
            value = kind.group(1) or values["value"]
            if value not in NUMPY_TYPES:
                return []
            found = PixelsTypeI()
            found.setValue(rstring(value))
            return [found]
        match = self._FROM.match(query)
        if not match:
            raise AssertionError(f"the stand-in query service does not know: {query}")
        return self._objects(match.group(1), query, values)

    def _objects(self, entity: str, query: str, values: dict[str, Any]) -> list[Any]:
        if entity in ("ExperimenterGroup", "Experimenter"):
            return self._people(entity, query, values)
        found = [
            o
            for _, o in sorted(self.server.objects.items())
            if type(o).__name__ == entity + "I" and self.sf.visible(o)
        ]
        clauses = query.split(" where ", 1)[1].split(" and ") if " where " in query else []
        for clause in clauses:
            clause = clause.strip()
            attr = self._ATTR.fullmatch(clause)
            if clause == "obj.id in (:ids)":
                found = [o for o in found if o.getId().getValue() in set(values["ids"])]
            elif clause == "dlink.parent.id = :did":
                members = set(self.server.dataset_images.get(values["did"], []))
                found = [o for o in found if o.getId().getValue() in members]
            elif clause == "owner.id = (:eid)":
                found = [o for o in found if self.sf.owner_of(o) == values["eid"]]
            elif attr:
                found = [
                    o
                    for o in found
                    if unwrap(getattr(o, "_" + attr.group(1))) == values[attr.group(2)]
                ]
            else:
                raise AssertionError(f"the stand-in query service does not know: {clause}")
        return found

    def _people(self, entity: str, query: str, values: dict[str, Any]) -> list[Any]:
        if entity == "ExperimenterGroup":
            found = []
            for gid in values.get("ids", list(self.server.groups)):
                if gid in self.server.groups:
                    group = ExperimenterGroupI(gid, True)
                    group.setName(rstring(self.server.groups[gid].name))
                    found.append(group)
            return found
        name = values.get("omeName")
        if name not in self.server.users or set(values) != {"omeName"}:
            raise AssertionError(f"the stand-in query service does not know: {query}")
        person = ExperimenterI(self.server.users[name], True)
        person.setOmeName(rstring(name))
        for gid in self.server.memberships[name]:  # the first is the default group
            group = ExperimenterGroupI(gid, True)
            group.setName(rstring(self.server.groups[gid].name))
            person.linkExperimenterGroup(group)
        return [person]

    def projection(self, query: str, params: Any, ctx: Any = None) -> list[list[Any]]:
        from biomeroworker.omero.exporter import PLATE_IMAGES_HQL
        from biomeroworker.omero.importer import RUN_ANNOTATIONS_HQL

        values = {k: unwrap(v) for k, v in params.map.items()}
        self.sf.record("projection", values)
        if query == PLATE_IMAGES_HQL:
            return [[rlong(i)] for i in self.server.plate_images.get(values["pid"], [])]
        if query == RUN_ANNOTATIONS_HQL:
            rows = []
            for ann in self.server.of_type("MapAnnotationI"):
                if not self.sf.visible(ann):
                    continue
                pairs = [(nv.name, nv.value) for nv in ann.getMapValue()]
                if (
                    ann.getNs().getValue() == values["ns"]
                    and (values["key"], values["rid"]) in pairs
                ):
                    rows += [[ann.getId(), rstring(k), rstring(v)] for k, v in pairs]
            return rows
        raise AssertionError(f"the stand-in query service does not know: {query}")


class UpdateService(_Service):
    """Saves object graphs in one transaction, with OMERO's permission checks."""

    def saveAndReturnObject(self, obj: Any, ctx: Any = None) -> Any:
        self.sf.record("saveAndReturnObject", type(obj).__name__)
        return self._save([obj])[0]

    def saveObject(self, obj: Any, ctx: Any = None) -> None:
        self.sf.record("saveObject", type(obj).__name__)
        self._save([obj])

    def saveAndReturnArray(self, objs: list[Any], ctx: Any = None) -> list[Any]:
        self.sf.record("saveAndReturnArray", [type(o).__name__ for o in objs])
        return self._save(objs)

    def _save(self, objs: list[Any]) -> list[Any]:
        new: list[Any] = []
        for obj in objs:
            self._collect(obj, new)
        for obj in new:
            self._check(obj)
        for obj in new:
            self.server.own(obj, self.sf.user, self.sf.group_id)
            if type(obj).__name__ == "DatasetImageLinkI":
                dataset = obj.getParent().getId().getValue()
                image = obj.getChild().getId().getValue()
                self.server.dataset_images.setdefault(dataset, []).append(image)
        return objs

    def _collect(self, obj: Any, new: list[Any]) -> None:
        if obj is None or obj.getId() is not None or any(o is obj for o in new):
            return
        new.append(obj)
        if hasattr(obj, "getParent") and hasattr(obj, "getChild"):
            self._collect(obj.getParent(), new)
            self._collect(obj.getChild(), new)
        if hasattr(obj, "isAnnotationLinksLoaded") and obj.isAnnotationLinksLoaded():
            for link in obj.copyAnnotationLinks():
                self._collect(link, new)
        if type(obj).__name__ == "RoiI":
            for shape in obj.copyShapes():
                self._collect(shape, new)

    def _existing(self, ref: Any) -> Any:
        if ref is None or ref.getId() is None:
            return None
        found = self.server.objects.get(ref.getId().getValue())
        if found is None or not self.sf.visible(found):
            raise security_violation(f"{type(ref).__name__}:{ref.getId().getValue()} not readable")
        return found

    def _check(self, obj: Any) -> None:
        name = type(obj).__name__
        if name == "DatasetImageLinkI":
            dataset = self._existing(obj.getParent())
            if dataset is not None and not self.sf.may("link", dataset):
                raise security_violation(
                    f"{self.sf.user} may not link into Dataset {dataset.getId().getValue()} "
                    f"(group is {self.server.groups[self.sf.group_id].permissions})"
                )
        elif name.endswith("AnnotationLinkI"):
            parent = self._existing(obj.getParent())
            if parent is not None and not self.sf.may("annotate", parent):
                raise security_violation(
                    f"{self.sf.user} may not annotate {type(parent).__name__[:-1]} "
                    f"{parent.getId().getValue()} "
                    f"(group is {self.server.groups[self.sf.group_id].permissions})"
                )
        elif name == "RoiI":
            image = self._existing(obj.getImage())
            if image is not None and not self.sf.may("annotate", image):
                raise security_violation(
                    f"{self.sf.user} may not add ROIs to Image {image.getId().getValue()} "
                    f"(group is {self.server.groups[self.sf.group_id].permissions})"
                )


class PixelsService(_Service):
    def createImage(
        self,
        sizeX: int,
        sizeY: int,
        sizeZ: int,
        sizeT: int,
        channelList: list[int],
        pixelsType: Any,
        name: str,
        description: str,
        ctx: Any = None,
    ) -> Any:
        ptype = pixelsType.getValue().getValue()
        self.sf.record("createImage", (name, ptype))
        image = ImageI()
        image.setName(rstring(name))
        image.setDescription(rstring(description or ""))
        image_id = self.server.own(image, self.sf.user, self.sf.group_id)
        shape = (sizeT, len(channelList), sizeZ, sizeY, sizeX)
        pixels = self.server._add_pixels(image, self.sf.user, self.sf.group_id, shape, ptype)
        self.server.pixels[pixels.getId().getValue()] = np.zeros(shape, NUMPY_TYPES[ptype])
        return rlong(image_id)

    def setChannelGlobalMinMax(
        self, pixelsId: int, channelIndex: int, min: float, max: float, ctx: Any = None
    ) -> None:
        self.server.channel_ranges[(int(pixelsId), int(channelIndex))] = (min, max)
        stats = self.server.objects[int(pixelsId)].getChannel(int(channelIndex)).getStatsInfo()
        stats.setGlobalMin(rdouble(min))
        stats.setGlobalMax(rdouble(max))


class ContainerService(_Service):
    def getImages(self, kind: str, ids: list[int], options: Any, ctx: Any = None) -> list[Any]:
        return [self.server.objects[i] for i in ids if self.sf.visible(self.server.objects[i])]


class AdminService(_Service):
    def getEventContext(self) -> Any:
        group = self.server.groups[self.sf.group_id]
        return omero.sys.EventContext(
            userId=self.sf.uid,
            userName=self.sf.user,
            groupId=self.sf.group_id,
            groupName=group.name,
            isAdmin=bool(self.server.privileges.get(self.sf.user)),
            sessionUuid=self.sf.session.uuid,
            memberOfGroups=list(self.server.memberships.get(self.sf.user, [])),
            leaderOfGroups=[],
        )

    def getCurrentAdminPrivileges(self) -> list[Any]:
        found = []
        for name in self.server.privileges.get(self.sf.user, ()):
            privilege = AdminPrivilegeI()
            privilege.setValue(rstring(name))
            found.append(privilege)
        return found


class SessionService(_Service):
    def getSession(self, session_uuid: str) -> Any:
        session = SessionI()
        session.setUuid(rstring(session_uuid))
        return session

    def createSessionWithTimeout(self, principal: Any, ttl: int) -> Any:
        self.server.record("admin", "suConn", (principal.name, principal.group, ttl))
        if "Sudo" not in self.server.privileges.get(self.sf.user, ()):
            raise security_violation(f"{self.sf.user} lacks the Sudo privilege")
        if principal.name not in self.server.users:
            raise api_usage(f"no such user {principal.name}")
        groups = self.server.memberships[principal.name]
        group_id = next(g for g in groups if self.server.groups[g].name == principal.group)
        session = Session(str(uuid.uuid4()), principal.name, group_id)
        self.server.sessions[session.uuid] = session
        return self.getSession(session.uuid)


class RawPixelsStore(_Service):
    """One raw pixels store: reads and writes the pixels set by setPixelsId."""

    def __init__(self, sf: ServiceFactory) -> None:
        super().__init__(sf)
        self.pixels_id: int | None = None
        self.next_tile: tuple[int, ...] = ()

    def _data(self) -> np.ndarray:
        if self.pixels_id is None:
            raise api_usage("pixels id not set")
        return self.server.pixels[self.pixels_id]

    def _pyramid(self) -> bool:
        size_y, size_x = self._data().shape[-2:]
        return size_x > MAX_PLANE[0] or size_y > MAX_PLANE[1]

    def setPixelsId(self, pixelsId: int, bypassOriginalFile: bool, ctx: Any = None) -> None:
        pixels = self.server.objects.get(int(pixelsId))
        if pixels is None or not self.sf.visible(pixels):
            raise security_violation(f"Pixels {pixelsId} not readable")
        self.pixels_id = int(pixelsId)
        if self.server.on_set_pixels_id is not None:
            self.server.on_set_pixels_id(self.pixels_id)

    def getTileSize(self, ctx: Any = None) -> list[int]:
        size_y, size_x = self._data().shape[-2:]
        return list(PYRAMID_TILE) if self._pyramid() else [size_x, min(size_y, 1024)]

    def getTile(
        self, z: int, c: int, t: int, x: int, y: int, w: int, h: int, ctx: Any = None
    ) -> bytes:
        tile = self._data()[t, c, z, y : y + h, x : x + w]
        return tile.astype(tile.dtype.newbyteorder(">")).tobytes()

    def getPlane(self, z: int, c: int, t: int, ctx: Any = None) -> bytes:
        plane = self._data()[t, c, z]
        return plane.astype(plane.dtype.newbyteorder(">")).tobytes()

    def _write(self, buf: bytes, z: int, c: int, t: int, x: int, y: int, w: int, h: int) -> None:
        if len(buf) > self.server.max_message_bytes:
            raise Ice.MemoryLimitException()
        data = self._data()
        dtype = data.dtype.newbyteorder(">")
        if len(buf) != w * h * dtype.itemsize:
            raise api_usage(f"buffer of {len(buf)} bytes for a {w}x{h} tile")
        data[t, c, z, y : y + h, x : x + w] = np.frombuffer(buf, dtype).reshape(h, w)

    def setTile(
        self, buf: bytes, z: int, c: int, t: int, x: int, y: int, w: int, h: int, ctx: Any = None
    ) -> None:
        self.sf.record("setTile", (self.pixels_id, z, c, t, x, y))
        if self._pyramid():
            # A pyramid is written in order, in tiles of the size getTileSize gives.
            size_y, size_x = self._data().shape[-2:]
            tile_w, tile_h = PYRAMID_TILE
            if (w, h) != (min(tile_w, size_x - x), min(tile_h, size_y - y)):
                raise api_usage(f"tile {w}x{h} at {x},{y}: pyramid tiles are {tile_w}x{tile_h}")
            order = (t, c, z, y, x)
            if self.next_tile and order < self.next_tile:
                raise api_usage(f"tile {order} written out of order")
            self.next_tile = order
        self._write(buf, z, c, t, x, y, w, h)

    def setPlane(self, buf: bytes, z: int, c: int, t: int, ctx: Any = None) -> None:
        self.sf.record("uploadPlane", (self.pixels_id, z, c, t))
        if self._pyramid():
            raise api_usage("setPlane is not supported on a pyramid: write tiles")
        size_y, size_x = self._data().shape[-2:]
        self._write(buf, z, c, t, 0, 0, size_x, size_y)

    def close(self, ctx: Any = None) -> None:
        self.sf.closed_stores.append(self)


class RenderingEngine(_Service):
    """What image_to_zarr's add_omero_metadata reads through ChannelWrapper."""

    def __init__(self, sf: ServiceFactory) -> None:
        super().__init__(sf)
        self.pixels: Any = None

    def lookupPixels(self, pixelsId: int, ctx: Any = None) -> None:
        self.pixels = self.server.objects[int(pixelsId)]

    def lookupRenderingDef(self, pixelsId: int, ctx: Any = None) -> bool:
        return True

    def getRenderingDefId(self, ctx: Any = None) -> int:
        return 1

    def load(self, ctx: Any = None) -> None:
        pass

    def getPixels(self, ctx: Any = None) -> Any:
        return self.pixels

    def getModel(self, ctx: Any = None) -> Any:
        model = RenderingModelI()
        model.setValue(rstring("greyscale"))
        return model

    def getDefaultZ(self, ctx: Any = None) -> int:
        return 0

    def getDefaultT(self, ctx: Any = None) -> int:
        return 0

    def isActive(self, index: int, ctx: Any = None) -> bool:
        return True

    def getRGBA(self, index: int, ctx: Any = None) -> list[int]:
        return [255, 255, 255, 255]

    def getChannelWindowStart(self, index: int, ctx: Any = None) -> float:
        return 0.0

    def getChannelWindowEnd(self, index: int, ctx: Any = None) -> float:
        return 255.0

    def getPixelsTypeLowerBound(self, index: int, ctx: Any = None) -> float:
        return 0.0

    def getPixelsTypeUpperBound(self, index: int, ctx: Any = None) -> float:
        return 65535.0

    def getCodomainMapContext(self, index: int, ctx: Any = None) -> list[Any]:
        return []

    def getChannelFamily(self, index: int, ctx: Any = None) -> Any:
        family = FamilyI()
        family.setValue(rstring("linear"))
        return family

    def getChannelCurveCoefficient(self, index: int, ctx: Any = None) -> float:
        return 1.0


class RawFileStore(_Service):
    def __init__(self, sf: ServiceFactory) -> None:
        super().__init__(sf)
        self.file_id: int | None = None

    def setFileId(self, fileId: int, ctx: Any = None) -> None:
        known = self.server.objects.get(int(fileId))
        if known is not None and not self.sf.visible(known):
            raise security_violation(f"OriginalFile {fileId} is not readable")
        self.file_id = int(fileId)
        self.server.files.setdefault(self.file_id, b"")

    def read(self, position: int, length: int, ctx: Any = None) -> bytes:
        assert self.file_id is not None
        self.sf.record("read", (self.file_id, position, length))
        return self.server.files[self.file_id][position : position + length]

    def size(self, ctx: Any = None) -> int:
        assert self.file_id is not None
        return len(self.server.files[self.file_id])

    def write(self, buf: bytes, position: int, length: int, ctx: Any = None) -> None:
        assert self.file_id is not None
        data = self.server.files[self.file_id]
        self.server.files[self.file_id] = data[:position] + bytes(buf[:length])

    def save(self, ctx: Any = None) -> Any:
        return self.server.objects[self.file_id]


class SharedResources(_Service):
    def repositories(self) -> Any:
        from omero.model import OriginalFileI

        return SimpleNamespace(descriptions=[OriginalFileI(1, False)])

    def newTable(self, repository: int, name: str, ctx: Any = None) -> StandInTable:
        from omero.model import OriginalFileI

        self.sf.record("newTable", name)
        file = OriginalFileI()
        file.setName(rstring(name))
        file.setMimetype(rstring("OMERO.tables"))
        file_id = self.server.own(file, self.sf.user, self.sf.group_id)
        table = StandInTable(name, file)
        self.server.tables[file_id] = table
        return table


class CommandHandle:
    """A submitted Delete2: done after ``server.delete_polls`` polls, or refused."""

    def __init__(self, sf: ServiceFactory, request: Any) -> None:
        self.sf = sf
        self.request = request
        self.polls = 0
        self.response: Any = None
        self.closed = False
        sf.record("submit", type(request).__name__)

    def poll(self) -> bool:
        self.polls += 1
        if self.polls < self.sf.server.delete_polls:
            return False
        if self.response is None:
            self.response = self._run()
        return True

    def _run(self) -> Any:
        targets = dict(self.request.targetObjects)
        if self.sf.server.refuse_deletes:
            return omero.cmd.ERR(name="graph-fail", parameters={"message": "refused"})
        for kind, ids in targets.items():
            for oid in ids:
                obj = self.sf.server.objects.get(oid)
                if obj is None or self.sf.owner_of(obj) != self.sf.uid:
                    return omero.cmd.ERR(
                        name="graph-fail", parameters={"message": f"may not delete {kind} {oid}"}
                    )
            self.sf.record("deleteObjects", (kind, sorted(ids)))
            for oid in ids:
                del self.sf.server.objects[oid]
                for members in self.sf.server.dataset_images.values():
                    if oid in members:
                        members.remove(oid)
        return omero.cmd.OK()

    def close(self) -> None:
        self.closed = True
