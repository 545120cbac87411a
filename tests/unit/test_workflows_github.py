from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from biomeroworker.workflows.descriptor import DescriptorError
from biomeroworker.workflows.github import (
    cache_path,
    fetch_descriptor,
    parse_repo_url,
    resolve_descriptor,
)

URL = "https://github.com/TorecLuik/W_NucleiSegmentation-Cellpose/tree/v1.2.7"
SAMPLE = Path(__file__).parents[2] / "workflows" / "nuclei-segmentation" / "descriptor.json"


class FakeGitHub:
    """Stands in for raw.githubusercontent.com, which this machine cannot reach."""

    def __init__(self, body: bytes | None) -> None:
        self.body = body
        self.requested: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.requested.append(url)
        if self.body is None:
            raise urllib.error.URLError("Name or service not known")
        return self.body


def test_tree_url_gives_owner_repo_and_tag() -> None:
    ref = parse_repo_url(URL)
    assert (ref.owner, ref.repo, ref.tag) == (
        "TorecLuik",
        "W_NucleiSegmentation-Cellpose",
        "v1.2.7",
    )
    assert ref.raw_descriptor_url == (
        "https://raw.githubusercontent.com/TorecLuik/W_NucleiSegmentation-Cellpose/v1.2.7/"
        "descriptor.json"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/o/r",
        "https://github.com/o/r/tree/..",
        "https://github.com/o/r/tree/v1/../../x",
        "https://gitlab.com/o/r/tree/v1",
        "http://github.com/o/r/tree/v1",
    ],
)
def test_url_that_is_not_a_pinned_tree_is_refused(url: str) -> None:
    with pytest.raises(DescriptorError, match=r"expected https://github\.com/"):
        parse_repo_url(url)


def test_cache_path_is_per_owner_repo_and_tag(tmp_path: Path) -> None:
    path = cache_path(parse_repo_url(URL), tmp_path)
    assert path == tmp_path / "TorecLuik" / "W_NucleiSegmentation-Cellpose" / "v1.2.7" / (
        "descriptor.json"
    )


def test_cached_tag_resolves_without_network(tmp_path: Path) -> None:
    path = cache_path(parse_repo_url(URL), tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(SAMPLE.read_bytes())
    assert resolve_descriptor(URL, cache_root=tmp_path).name == "NucleiSegmentation-Watershed"


def test_uncached_tag_is_an_error_that_says_how_to_fill_the_cache(tmp_path: Path) -> None:
    with pytest.raises(DescriptorError) as caught:
        resolve_descriptor(URL, cache_root=tmp_path)
    message = str(caught.value)
    assert "biomero init" in message
    assert str(cache_path(parse_repo_url(URL), tmp_path)) in message


def test_local_path_resolves_directly() -> None:
    assert resolve_descriptor(str(SAMPLE)).source == str(SAMPLE)


def test_fetch_downloads_once_and_caches(tmp_path: Path) -> None:
    github = FakeGitHub(SAMPLE.read_bytes())
    fetch_descriptor(URL, cache_root=tmp_path, fetch=github)
    fetch_descriptor(URL, cache_root=tmp_path, fetch=github)
    assert github.requested == [parse_repo_url(URL).raw_descriptor_url]
    assert resolve_descriptor(URL, cache_root=tmp_path).image.endswith("watershed")


def test_fetch_without_cache_or_network_names_url_and_cache(tmp_path: Path) -> None:
    with pytest.raises(DescriptorError) as caught:
        fetch_descriptor(URL, cache_root=tmp_path, fetch=FakeGitHub(None))
    assert "raw.githubusercontent.com" in str(caught.value)
    assert "not cached at" in str(caught.value)


def test_fetched_garbage_is_not_cached(tmp_path: Path) -> None:
    with pytest.raises(DescriptorError, match="not valid JSON"):
        fetch_descriptor(URL, cache_root=tmp_path, fetch=FakeGitHub(b"<html>404</html>"))
    assert not cache_path(parse_repo_url(URL), tmp_path).exists()


def test_plain_http_url_is_refused_not_read_as_a_path(tmp_path: Path) -> None:
    with pytest.raises(DescriptorError, match="expected https"):
        resolve_descriptor("http://github.com/o/r/tree/v1", cache_root=tmp_path)


def test_a_mirror_serves_the_same_layout_and_may_be_plain_http(tmp_path: Path) -> None:
    github = FakeGitHub(SAMPLE.read_bytes())
    _, fetched = fetch_descriptor(
        URL, cache_root=tmp_path, fetch=github, mirror="http://mirror.local/biomero/"
    )
    ref = parse_repo_url(URL)
    assert fetched
    assert github.requested == [
        f"http://mirror.local/biomero/{ref.owner}/{ref.repo}/{ref.tag}/descriptor.json"
    ]


def test_without_a_mirror_plain_http_is_never_fetched() -> None:
    from biomeroworker.workflows.github import http_get

    with pytest.raises(ValueError, match="non-https"):
        http_get("http://example.org/descriptor.json")


def test_workflow_files_are_cached_and_a_missing_requirements_file_is_remembered(
    tmp_path: Path,
) -> None:
    from biomeroworker.workflows.github import fetch_workflow_files

    files = {"wrapper.py": b"print('hi')\n"}
    asked: list[str] = []

    def serve(url: str) -> bytes:
        asked.append(url.rsplit("/", 1)[-1])
        name = url.rsplit("/", 1)[-1]
        if name not in files:
            raise OSError("404 Not Found")
        return files[name]

    assert fetch_workflow_files(URL, cache_root=tmp_path, fetch=serve) == ["wrapper.py"]
    assert fetch_workflow_files(URL, cache_root=tmp_path, fetch=serve) == []
    assert asked == ["wrapper.py", "requirements.txt"]


def test_a_tag_without_a_wrapper_is_an_error_naming_the_url(tmp_path: Path) -> None:
    from biomeroworker.workflows.github import fetch_workflow_files

    def nothing(url: str) -> bytes:
        raise OSError("404 Not Found")

    with pytest.raises(
        DescriptorError, match=r"wrapper\.py .* could not be downloaded from https://raw"
    ):
        fetch_workflow_files(URL, cache_root=tmp_path, fetch=nothing)
