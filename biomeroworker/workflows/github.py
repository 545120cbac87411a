"""Descriptors of workflows pinned to a GitHub tag, kept in an on-disk cache per tag.

``resolve_descriptor`` never goes to the network: a URL whose tag is not cached is an
error that says how to fill the cache. Only ``fetch_descriptor`` (run by
``biomero init``) downloads, and a tag is immutable, so a cached file is never refetched.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from biomeroworker.workflows.descriptor import (
    DESCRIPTOR_FILES,
    Descriptor,
    DescriptorError,
    descriptor_from_data,
    load_descriptor,
    read_data,
)

_NAME = r"[A-Za-z0-9_.-]+"
_TREE_URL = re.compile(
    rf"https://github\.com/(?P<owner>{_NAME})/(?P<repo>{_NAME})/tree/(?P<tag>{_NAME})/?"
)
FETCH_TIMEOUT_S = 30.0
Fetch = Callable[[str], bytes]


@dataclass(frozen=True)
class RepoRef:
    owner: str
    repo: str
    tag: str

    @property
    def raw_descriptor_url(self) -> str:
        return self.file_url("descriptor.json")

    def file_url(self, name: str, mirror: str | None = None) -> str:
        """Where a file of this tag is served: GitHub's raw host, or a mirror laid out
        as ``<mirror>/<owner>/<repo>/<tag>/<file>`` (sites without GitHub access)."""
        base = mirror.rstrip("/") if mirror else "https://raw.githubusercontent.com"
        return f"{base}/{self.owner}/{self.repo}/{self.tag}/{name}"

    def __str__(self) -> str:
        return f"{self.owner}/{self.repo}@{self.tag}"


def parse_repo_url(url: str) -> RepoRef:
    """Read ``https://github.com/<owner>/<repo>/tree/<tag>``; anything else is an error."""
    match = _TREE_URL.fullmatch(url.strip())
    parts = match.groupdict().values() if match else ()
    if not match or any(part in {".", ".."} for part in parts):
        raise DescriptorError(
            f"workflow repo {url!r}: expected https://github.com/<owner>/<repo>/tree/<tag>"
        )
    return RepoRef(owner=match["owner"], repo=match["repo"], tag=match["tag"])


def is_repo_url(source: str) -> bool:
    return "://" in source


def default_cache_root() -> Path:
    return Path(platformdirs.user_cache_dir("biomero")) / "descriptors"


def cache_path(ref: RepoRef, cache_root: Path | None = None) -> Path:
    root = cache_root if cache_root is not None else default_cache_root()
    return root / ref.owner / ref.repo / ref.tag / "descriptor.json"


def resolve_descriptor(source: str, *, cache_root: Path | None = None) -> Descriptor:
    """A descriptor from a local path or a cached GitHub tag; never downloads."""
    if not is_repo_url(source):
        return load_descriptor(Path(source))
    ref = parse_repo_url(source)
    path = cache_path(ref, cache_root)
    if not path.is_file():
        raise DescriptorError(
            f"descriptor of {ref} is not cached at {path}: run `biomero init` where GitHub "
            f"is reachable, or save {ref.raw_descriptor_url} there"
        )
    return load_descriptor(path)


def fetch_descriptor(
    url: str,
    *,
    cache_root: Path | None = None,
    fetch: Fetch | None = None,
    mirror: str | None = None,
) -> tuple[Descriptor, bool]:
    """Make sure the descriptor of a pinned tag is cached, downloading it if it is not.

    Looks for ``descriptor.json``, ``descriptor.yaml`` and ``config.yaml`` (bilayers) in
    that order, as biomero 2.8.3 does: a file the tag does not have (HTTP 404) moves on
    to the next, any other failure is an error. The cache keeps the descriptor as
    ``descriptor.json`` (a YAML one as the same data in JSON).

    Returns the descriptor and whether it was downloaded now (a tag is immutable, so a
    cached one is never fetched again).
    """
    ref = parse_repo_url(url)
    path = cache_path(ref, cache_root)
    if path.is_file():
        return load_descriptor(path), False
    tried = []
    for name in DESCRIPTOR_FILES:
        source = ref.file_url(name, mirror)
        body = _download_if_there(ref, source, path, fetch, mirror)
        if body is None:
            tried.append(source)
            continue
        yaml = not name.endswith(".json")
        data = read_data(body.decode("utf-8", "replace"), source=source, yaml=yaml)
        descriptor = descriptor_from_data(data, source)
        if yaml:
            body = json.dumps(data, default=str).encode()
        _write_atomic(path, body)
        return descriptor, True
    raise DescriptorError(
        f"{ref} has no descriptor (tried {', '.join(tried)}); the tag must hold "
        f"{' or '.join(DESCRIPTOR_FILES)}"
    )


# What a workflow folder holds besides its descriptor, for runtimes that run the
# workflow's own code (native): wrapper.py is required, requirements.txt optional.
WORKFLOW_FILES = ("wrapper.py", "requirements.txt")


def fetch_workflow_files(
    url: str,
    *,
    cache_root: Path | None = None,
    fetch: Fetch | None = None,
    mirror: str | None = None,
) -> list[str]:
    """Cache the files a native run needs next to the descriptor; return those fetched.

    A missing ``requirements.txt`` is fine (the download answers 404); a missing
    ``wrapper.py`` is an error naming the URL.
    """
    ref = parse_repo_url(url)
    folder = cache_path(ref, cache_root).parent
    fetched = []
    for name in WORKFLOW_FILES:
        target = folder / name
        absent = folder / f".{name}.absent"
        if target.is_file() or absent.is_file():
            continue
        try:
            body = _download(ref, ref.file_url(name, mirror), target, fetch, mirror)
        except DescriptorError:
            if name == "wrapper.py":
                raise
            _write_atomic(absent, b"")  # remembered: the tag has none, and never will
            continue
        _write_atomic(target, body)
        fetched.append(name)
    return fetched


def cached_folder(url: str, *, cache_root: Path | None = None) -> Path:
    """The cache folder of a pinned tag (descriptor.json, and wrapper files if fetched)."""
    return cache_path(parse_repo_url(url), cache_root).parent


def _download(
    ref: RepoRef, source: str, path: Path, fetch: Fetch | None, mirror: str | None
) -> bytes:
    return _download_if_there(ref, source, path, fetch, mirror, missing_ok=False) or b""


def _download_if_there(
    ref: RepoRef,
    source: str,
    path: Path,
    fetch: Fetch | None,
    mirror: str | None,
    *,
    missing_ok: bool = True,
) -> bytes | None:
    """The file's bytes; with ``missing_ok``, None when the server answers 404."""
    try:
        return (fetch or (lambda u: http_get(u, allow_http=bool(mirror))))(source)
    except (OSError, ValueError, urllib.error.URLError, http.client.HTTPException) as exc:
        if missing_ok and isinstance(exc, urllib.error.HTTPError) and exc.code == 404:
            return None
        raise DescriptorError(
            f"{path.name} of {ref} is not cached at {path} and could not be downloaded from "
            f"{source}: {exc}"
        ) from exc


def http_get(url: str, *, allow_http: bool = False) -> bytes:
    """GET over https; plain http only for a mirror the admin configured."""
    if not (url.startswith("https://") or (allow_http and url.startswith("http://"))):
        raise ValueError(f"refusing to fetch a non-https URL: {url}")
    with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310
        return response.read()


def _write_atomic(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".descriptor.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
