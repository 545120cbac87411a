"""Our reading of a bilayers config agrees with biomero 2.8.3's own (its schema_parsers).

biomero 2.8.3 (PyPI) runs in its own virtualenv (tools/install-peer-biomero) and parses
tests/fixtures/bilayers/config.yaml; every input it lists must mean the same here: the
same ids, a file-attachment is a file parameter, a set-by-server folder is the run's
folder with the same flag, value-choices are a choice, and types, defaults and flags
match.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from biomeroworker.workflows.descriptor import load_descriptor

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "fixtures" / "bilayers" / "config.yaml"
UPSTREAM = """import json, sys, yaml
from biomero.schema_parsers import WorkflowDescriptorParser
data = yaml.safe_load(open(sys.argv[1]))
parsed = WorkflowDescriptorParser.parse_descriptor(data, name="t").model_dump(by_alias=True)
print(json.dumps(parsed, default=str))
"""
KINDS = {"integer": "int", "float": "float", "boolean": "boolean", "string": "string"}


def published_shapes(tmp_path: Path) -> Path:
    """The test config with the shapes published bilayers configs have: a registry in
    org, -name options, a bare key=, the out-folder flag named twice."""
    data = yaml.safe_load(CONFIG.read_text())
    data["docker_image"]["org"] = "docker.io/biomero"
    data["inputs"][0]["cli_tag"] = "folder="
    data["outputs"][0]["cli_tag"] = "-out"
    data["parameters"][7]["cli_tag"] = "-out"
    data["parameters"][2]["cli_tag"] = "-threads"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("variant", ["fixture", "published shapes"])
def test_biomero_and_we_read_a_bilayers_config_alike(
    peer_python: str, variant: str, tmp_path: Path
) -> None:
    config = CONFIG if variant == "fixture" else published_shapes(tmp_path)
    proc = subprocess.run(
        [peer_python, "-c", UPSTREAM, str(config)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    upstream = json.loads(proc.stdout)
    ours = load_descriptor(config)
    by_id = {p.id: p for p in ours.parameters}
    folders = dict(ours.folder_flags)

    assert upstream["name"] == ours.name
    assert upstream["container-image"]["image"] == ours.image
    assert upstream["command-line"] == ours.command_line
    assert [i["id"] for i in upstream["inputs"]] == list(by_id)
    for item in upstream["inputs"]:
        param = by_id[item["id"]]
        where = item["id"]
        if item["file-attachment"]:
            assert (param.kind, param.server_set, param.flag) == (
                "file", False, item["command-line-flag"],
            ), where  # fmt: skip
            assert param.optional == item["optional"], where
            continue
        if item["set-by-server"]:
            assert param.server_set, where
            flag = item["command-line-flag"]
            if item["output-dir-set"]:
                assert folders[flag] == "out", where
            elif not item["optional"]:
                assert folders[flag] == "in", where
            continue
        assert not param.server_set and param.flag == item["command-line-flag"], where
        assert param.optional == item["optional"], where
        assert param.default == item["default-value"], where
        if item["value-choices"]:
            assert param.kind == "choice" and list(param.choices) == item["value-choices"], where
        else:
            assert param.kind == KINDS[item["type"]], where
