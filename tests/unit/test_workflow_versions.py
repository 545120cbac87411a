"""A run may name any version an earlier `biomero init` prepared, not only the configured one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biomeroworker.config import load_settings
from biomeroworker.prepare import prepared_on_cluster
from biomeroworker.transport.local import LocalTransport
from biomeroworker.workflows.catalog import UnknownWorkflowError, get_workflow
from biomeroworker.workflows.github import cache_path, parse_repo_url

REPO = Path(__file__).resolve().parents[2]
URL = "https://github.com/acme/W_Thing/tree/v2.0.0"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    descriptor = json.loads((REPO / "tests/fixtures/misbehave/descriptor.json").read_text())
    for tag in ("v1.0.0", "v2.0.0"):
        path = cache_path(parse_repo_url(URL.replace("v2.0.0", tag)))
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**descriptor, "description": f"at {tag}"}))
    config = tmp_path / "slurm-config.ini"
    config.write_text(
        "[SSH]\nhost = h\n[SLURM]\nslurm_data_path = d\nslurm_images_path = images\n"
        "slurm_converters_path = c\nslurm_script_path = scripts\n"
        f"[WORKFLOWS]\nthing = thing\nthing_repo = {URL}\n"
        f"local = local\nlocal_repo = {REPO}/tests/fixtures/misbehave\n"
        f"[WORKER]\ntransport = local\nshared_path = {tmp_path}\n"
    )
    return load_settings([config], env={})


def test_the_configured_version_is_the_default(settings) -> None:  # type: ignore[no-untyped-def]
    assert get_workflow(settings, "thing").version == "v2.0.0"


def test_an_earlier_cached_version_can_be_chosen(settings) -> None:  # type: ignore[no-untyped-def]
    wf = get_workflow(settings, "thing", "v1.0.0")
    assert wf.version == "v1.0.0"
    assert wf.descriptor.description == "at v1.0.0"
    assert wf.settings.repo.endswith("/tree/v1.0.0")


@pytest.mark.parametrize(
    ("name", "version", "says"),
    [
        ("thing", "v3.0.0", "set thing_repo to its tag and run `biomero init`"),
        ("thing", "../v1", "has one version here"),
        ("local", "v1.0.0", "a local folder has no other versions"),
    ],
)
def test_a_version_never_prepared_is_refused_with_what_to_do(settings, name, version, says) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownWorkflowError) as caught:
        get_workflow(settings, name, version)
    assert says in str(caught.value)


def test_a_version_counts_as_prepared_once_its_job_script_and_image_are_there(
    settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    wf = get_workflow(settings, "thing", "v1.0.0")
    transport = LocalTransport(home=tmp_path)
    assert not prepared_on_cluster(transport, settings, wf)
    (tmp_path / "scripts/thing/v1.0.0").mkdir(parents=True)
    (tmp_path / "scripts/thing/v1.0.0/job.sh").write_text("#!/bin/bash\n")
    assert not prepared_on_cluster(transport, settings, wf)  # no image yet
    (tmp_path / "images/thing").mkdir(parents=True)
    (tmp_path / "images/thing/w_misbehave_v1.0.0.sif").write_bytes(b"SIF")
    assert prepared_on_cluster(transport, settings, wf)


def test_the_versions_offered_are_the_configured_one_then_the_cached_ones(settings) -> None:  # type: ignore[no-untyped-def]
    from biomeroworker.workflows.catalog import prepared_versions

    assert prepared_versions(settings, "thing") == ["v2.0.0", "v1.0.0"]
    assert prepared_versions(settings, "local") == ["local"]
