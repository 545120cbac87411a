"""The sample workflow (workflows/nuclei-segmentation) on the synthetic samples."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from biomeroworker.workflows.descriptor import load_descriptor
from biomeroworker.workflows.samples import make_sample, nuclei_plane, write_sample

WORKFLOW = Path(__file__).parents[2] / "workflows" / "nuclei-segmentation"


@pytest.fixture(scope="module")
def wrapper() -> Iterator[ModuleType]:
    """wrapper.py is a stand-alone script, not part of the package: load it by path."""
    spec = importlib.util.spec_from_file_location("nuclei_wrapper", WORKFLOW / "wrapper.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while loading
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def run_wrapper(wrapper: ModuleType, infolder: Path, outfolder: Path, *extra: str) -> int:
    argv = ["--infolder", str(infolder), "--outfolder", str(outfolder), "--local", "-nmc"]
    return wrapper.main([*argv, *extra])


def objects(outfolder: Path, name: str, prefix: str = "") -> list[dict[str, str]]:
    with (outfolder / f"{prefix}{name}_objects.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_samples_are_deterministic_from_the_seed() -> None:
    first, again, other = make_sample(4, "czyx"), make_sample(4, "czyx"), make_sample(5, "czyx")
    np.testing.assert_array_equal(first.data, again.data)
    assert first.nuclei == again.nuclei
    assert not np.array_equal(first.data, other.data)


def test_samples_hold_touching_pairs_that_plain_labelling_merges() -> None:
    plane, count = nuclei_plane(7, singles=3, pairs=3)
    blobs = ndi.label(plane > 1000)[1]
    assert count == 9
    assert blobs == 6  # each touching pair is one connected blob


@pytest.mark.parametrize(
    ("axes", "shape"),
    [("yx", (160, 160)), ("czyx", (2, 3, 160, 160)), ("tczyx", (2, 2, 3, 160, 160))],
)
def test_sample_has_the_requested_axes(axes: str, shape: tuple[int, ...]) -> None:
    assert make_sample(1, axes).data.shape == shape


@pytest.mark.parametrize(("fmt", "version"), [("tiff", "0.5"), ("zarr", "0.4"), ("zarr", "0.5")])
def test_wrapper_finds_the_known_number_of_nuclei(
    wrapper: ModuleType, tmp_path: Path, fmt: str, version: str
) -> None:
    expected = {}
    for seed, axes in [(0, "yx"), (1, "cyx"), (2, "zyx"), (3, "tczyx"), (5, "yx"), (6, "czyx")]:
        sample = make_sample(seed, axes)
        write_sample(sample, tmp_path / "in", fmt, version=version)  # type: ignore[arg-type]
        expected[sample.name] = sample.nuclei
    assert run_wrapper(wrapper, tmp_path / "in", tmp_path / "out") == 0
    found = {name: len(objects(tmp_path / "out", name)) for name in expected}
    assert found == expected
    for name, count in expected.items():
        labels = tifffile.imread(tmp_path / "out" / f"{name}_labels.tif")
        assert labels.max() == count


def test_object_table_has_one_row_per_label_with_measurements(
    wrapper: ModuleType, tmp_path: Path
) -> None:
    sample = make_sample(2, "yx")
    write_sample(sample, tmp_path / "in", "tiff")
    assert run_wrapper(wrapper, tmp_path / "in", tmp_path / "out") == 0
    rows = objects(tmp_path / "out", sample.name)
    labels = tifffile.imread(tmp_path / "out" / f"{sample.name}_labels.tif")
    assert list(rows[0]) == ["image", "label", "area", "centroid_y", "centroid_x", "mean_intensity"]
    for row in rows:
        mask = labels == int(row["label"])
        assert row["image"] == sample.name
        assert int(row["area"]) == int(mask.sum())
        assert float(row["mean_intensity"]) == pytest.approx(sample.data[mask].mean(), abs=1e-2)
        assert float(row["centroid_y"]) == pytest.approx(np.argwhere(mask)[:, 0].mean(), abs=1e-2)


def test_params_file_sets_values_and_flags_override_it(wrapper: ModuleType, tmp_path: Path) -> None:
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"output_prefix": "from-file $(x) ", "threshold_method": "li"}))
    args = wrapper.get_parser().parse_args(
        ["--infolder", "i", "--outfolder", "o", "--params-file", str(params), "--min_size", "12"]
    )
    values = wrapper.resolve_params(args)
    assert values["output_prefix"] == "from-file $(x) "
    assert values["threshold_method"] == "li"
    assert values["min_size"] == 12
    assert values["sigma"] == 2.0


def test_output_prefix_is_put_before_every_output(wrapper: ModuleType, tmp_path: Path) -> None:
    write_sample(make_sample(0, "yx"), tmp_path / "in", "tiff")
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"output_prefix": "run 1 'a'_"}))
    assert (
        run_wrapper(wrapper, tmp_path / "in", tmp_path / "out", "--params-file", str(params)) == 0
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "run 1 'a'_nuclei_s0_yx_labels.tif",
        "run 1 'a'_nuclei_s0_yx_objects.csv",
    ]


def test_wrapper_parameters_match_the_descriptor(wrapper: ModuleType) -> None:
    descriptor = load_descriptor(WORKFLOW / "descriptor.json")
    in_descriptor = {p.id: p.default for p in descriptor.user_parameters}
    in_wrapper = {name: default for name, (_kind, default) in wrapper.PARAMETERS.items()}
    assert in_wrapper == in_descriptor
    choices = next(p.choices for p in descriptor.parameters if p.id == "threshold_method")
    assert list(choices) == list(wrapper.THRESHOLDS)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"threshold_method": "magic"}, "threshold_method: must be one of otsu, li"),
        ({"sigma": "wide"}, "sigma: expected float"),
        ({"min_size": 2.5}, "min_size: expected a whole number"),
        ({"min_distance": 0}, "min_distance: must be at least 1"),
        ({"output_prefix": "../up"}, "output_prefix: must not contain '/'"),
        ({"colour": "red"}, "unknown parameter(s) colour"),
    ],
)
def test_bad_parameter_exits_2_naming_it(
    wrapper: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], params, message
) -> None:
    write_sample(make_sample(0, "yx"), tmp_path / "in", "tiff")
    (tmp_path / "p.json").write_text(json.dumps(params))
    code = run_wrapper(
        wrapper, tmp_path / "in", tmp_path / "out", "--params-file", str(tmp_path / "p.json")
    )
    assert code == 2
    assert message in capsys.readouterr().err


def test_wrapper_exits_non_zero_with_a_message_on_bad_input(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.tif").write_bytes(b"not a tiff at all")
    result = subprocess.run(
        [sys.executable, str(WORKFLOW / "wrapper.py"), "--infolder", str(tmp_path / "in"),
         "--outfolder", str(tmp_path / "out"), "--local", "-nmc"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "cannot read broken.tif" in result.stderr


def test_empty_input_folder_is_an_input_error(
    wrapper: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    assert run_wrapper(wrapper, tmp_path / "in", tmp_path / "out") == 1
    assert "no .tif/.tiff files or .zarr folders" in capsys.readouterr().err
