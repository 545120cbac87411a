"""Fuzzing the parsers that read what others write: slurm-config.ini (and the
environment), descriptor.json, parameter values, OMERO script inputs, and input images.

Each property: whatever comes in, the answer is a value or our own clear error (a
BiomeroError subclass, ConfigError included); any other exception is a defect. `make test`
runs a bounded, derandomised profile (a few seconds per target); `bench/fuzz.py` runs the
same properties for longer, in rounds, with HYPOTHESIS_PROFILE=biomero-long. Crashes found
are kept below as explicit examples (`@example`) so they stay fixed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from biomeroworker.config import FIXED_SECTIONS, load_settings
from biomeroworker.errors import BiomeroError
from biomeroworker.inputs import check_images, job_flag_values, tiff_problem
from biomeroworker.omero import forms
from biomeroworker.prepare import flag_command
from biomeroworker.slurm.offer import check_flags
from biomeroworker.workflows.catalog import Workflow
from biomeroworker.workflows.descriptor import descriptor_from_data, parse_descriptor
from biomeroworker.workflows.jobscript import JobScriptSpec, render_job_script
from biomeroworker.workflows.params import validate_params

settings.register_profile(
    "biomero-ci",
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "biomero-long",  # one round of bench/fuzz.py, which runs rounds for a time budget
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "biomero-ci"))

# -- building blocks -------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, 2**53 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", " ", "1e999", "nan", "-inf", "0x10", "٣", "1_000", "\x00", "true"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=6,
)

# Keys users really write, misspelt ones, and anything.
_KNOWN_KEYS = [spec.name for keys in FIXED_SECTIONS.values() for spec in keys] + [
    "sbatch_partition",
    "sbatch_time",
    "sbatch_mem",
    "seg",
    "seg_repo",
    "seg_job",
    "seg_job_partition",
    "seg_job_time",
    "seg_job_mem",
    "seg_use_gpu",
    "seg_resubmit",
    "zarr_to_tiff",
]
config_keys = st.one_of(st.sampled_from(_KNOWN_KEYS), st.text(min_size=1, max_size=12))
config_values = st.one_of(
    st.sampled_from(
        [
            *("true", "no", "0", "-1", "1.5", "2026-13-01", "%(x)s", "/abs", "rel/path"),
            *("v0.0.38", "https://github.com/o/r/tree/v1", "http://h:1", "ssh", "rest", "gpu:1"),
        ]
    ),
    st.text(max_size=30),
)
sections = st.one_of(
    st.sampled_from([*FIXED_SECTIONS, "WORKFLOWS", "MODELS", "CONVERTERS", "UI", "DEFAULT"]),
    st.text(max_size=10),
)


config_lines = st.one_of(
    sections.map(lambda name: f"[{name}]"),
    st.builds(lambda k, v: f"{k} = {v}", config_keys, config_values),
    st.text(max_size=30),  # anything: continuation lines, comments, junk
)
config_texts = st.one_of(
    st.lists(config_lines, max_size=12).map("\n".join),
    st.text(max_size=120),
)


env_names = st.one_of(
    st.sampled_from(["GPU_PARTITION", "SQLALCHEMY_URL", "SLURM_JWT", "BIOMERO_PULL_CPUS"]),
    st.builds(
        lambda s, k: f"BIOMERO__{s}__{k}",
        st.sampled_from([*FIXED_SECTIONS, "WORKFLOWS", "X", ""]),
        config_keys,
    ),
)
# Environment variables cannot hold NUL (os.environ refuses it); anything else goes.
env_values = config_values.filter(lambda v: "\x00" not in v)


_SCRATCH = Path(tempfile.mkdtemp(prefix="biomero-fuzz-"))


def _load(text: str, env: dict[str, str]) -> Any:
    path = _SCRATCH / "slurm-config.ini"  # one file, rewritten: no folder per example
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return load_settings([path], env=env)


# -- config loader ---------------------------------------------------------------------


@given(config_texts, st.dictionaries(env_names, env_values, max_size=4))
def test_fuzz_config_loader_gives_settings_or_config_error(text: str, env: dict[str, str]) -> None:
    try:
        loaded = _load(text, env)
    except BiomeroError:
        return
    loaded.describe()
    for name in loaded.workflows:
        loaded.sbatch_flags_for(name)
        check_flags(job_flag_values(loaded, name, None), None)
    loaded.sbatch_flags_for_conversion()


# -- descriptor reader -----------------------------------------------------------------

input_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.sampled_from(["sigma", "cytomine_id", "a b", ""]), json_values),
        "type": st.one_of(
            st.sampled_from(["Number", "String", "Boolean", "ListDomain", "Other"]), json_values
        ),
        "default-value": json_values,
        "value-choices": json_values,
        "optional": json_values,
        "set-by-server": json_values,
        "minimum": json_values,
        "maximum": json_values,
        "name": json_values,
        "description": json_values,
    },
)
descriptors = st.fixed_dictionaries(
    {
        "schema-version": st.one_of(st.just("cytomine-0.1"), json_values),
        "name": st.one_of(st.just("Seg"), json_values),
        "container-image": st.one_of(
            st.fixed_dictionaries({"image": st.one_of(st.just("org/seg"), json_values)}),
            json_values,
        ),
        "inputs": st.one_of(st.lists(input_fields, max_size=4), json_values),
    },
    optional={"command-line": json_values, "description": json_values},
)


@given(st.one_of(st.text(max_size=200), descriptors.map(json.dumps)))
@example('{"schema-version": "cytomine-0.1", "name": "S", "container-image": {"image": "i"}, '
         '"inputs": [{"id": "a", "value-choices": 5}]}')  # fmt: skip
@example('{"schema-version": "cytomine-0.1", "name": "S", "container-image": {"image": "i"}, '
         '"inputs": [{"id": "a", "value-choices": [[1]], "default-value": [1]}]}')  # fmt: skip
def test_fuzz_descriptor_reader_gives_a_descriptor_or_descriptor_error(text: str) -> None:
    try:
        descriptor = parse_descriptor(text, source="fuzz")
    except BiomeroError:
        return
    assert all(p.id.isidentifier() for p in descriptor.parameters)


# -- bilayers configs --------------------------------------------------------------------

cli_tags = st.one_of(
    st.sampled_from(["--x", "-x", "--x=", "None", "", "--a b", "$(id)", "--y", "-"]),
    json_values,
)
bilayers_items = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.sampled_from(["x", "y", "a b", "save_dir"]), json_values),
        "type": st.one_of(
            st.sampled_from(
                ["image", "file", "integer", "float", "checkbox", "radio", "textbox", "slider"]
            ),
            json_values,
        ),
        "cli_tag": cli_tags,
        "default": json_values,
        "optional": json_values,
        "options": st.one_of(
            st.lists(st.fixed_dictionaries({"value": json_values}), max_size=3), json_values
        ),
        "append_value": json_values,
        "output_dir_set": json_values,
        "format": json_values,
    },
)
bilayers_configs = st.fixed_dictionaries(
    {
        "docker_image": st.one_of(
            st.fixed_dictionaries({"org": st.just("o"), "name": st.just("n")}), json_values
        ),
        "exec_function": st.one_of(
            st.fixed_dictionaries(
                {"cli_command": st.one_of(st.just("python -m n"), st.text(max_size=20))},
                optional={
                    "hidden_args": st.one_of(
                        st.lists(
                            st.fixed_dictionaries(
                                {"cli_tag": cli_tags},
                                optional={
                                    "value": json_values,
                                    "append_value": json_values,
                                    "cli_order": json_values,
                                },
                            ),
                            max_size=2,
                        ),
                        json_values,
                    )
                },
            ),
            json_values,
        ),
    },
    optional={
        "inputs": st.one_of(st.lists(bilayers_items, max_size=3), json_values),
        "parameters": st.one_of(st.lists(bilayers_items, max_size=4), json_values),
        "outputs": st.one_of(st.lists(bilayers_items, max_size=2), json_values),
        "citations": json_values,
    },
)


@given(bilayers_configs)
def test_fuzz_bilayers_configs_give_a_runnable_job_or_descriptor_error(data: Any) -> None:
    """Whatever a config holds: a DescriptorError, or a descriptor whose job script
    renders (every flag it lets through is one the job script accepts)."""
    try:
        descriptor = descriptor_from_data(data, "fuzz")
    except BiomeroError:
        return
    spec = JobScriptSpec(
        workflow="w", version="v1", runtime="apptainer", image_path="/i.sif",
        bilayers=flag_command(descriptor),
    )  # fmt: skip
    render_job_script(spec)


# -- parameter validation --------------------------------------------------------------


small_scalars = st.one_of(
    st.booleans(), st.integers(-100, 100), st.floats(-1e6, 1e6), st.text(max_size=6)
)
param_specs = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["sigma", "mode", "flag", "cytomine_x"]),
        "type": st.sampled_from(["Number", "String", "Boolean", "ListDomain"]),
    },
    optional={
        "default-value": small_scalars,
        "value-choices": st.lists(small_scalars, max_size=3),
        "optional": st.booleans(),
        "minimum": st.floats(-10, 10),
        "maximum": st.floats(-10, 10),
    },
)


@st.composite
def usable_descriptors(draw: st.DrawFn) -> Any:
    """Descriptors that parse (broken ones fall back to one Number input)."""
    data = {
        "schema-version": "cytomine-0.1",
        "name": "Seg",
        "container-image": {"image": "org/seg"},
        "inputs": draw(st.lists(param_specs, max_size=3, unique_by=lambda p: p["id"])),
    }
    try:
        return parse_descriptor(json.dumps(data), source="fuzz")
    except BiomeroError:
        data["inputs"] = [{"id": "sigma", "type": "Number"}]
        return parse_descriptor(json.dumps(data), source="fuzz")


@given(
    usable_descriptors(),
    st.dictionaries(
        st.sampled_from(["sigma", "mode", "flag", "cytomine_x", "other"]), json_values, max_size=4
    ),
)
@example(
    parse_descriptor(
        '{"schema-version": "cytomine-0.1", "name": "S", "container-image": {"image": "i"}, '
        '"inputs": [{"id": "sigma", "type": "Number", "default-value": 1.5}]}',
        source="regression",
    ),
    {"sigma": 10**400},
)
def test_fuzz_parameter_validation_gives_values_or_parameter_error(
    descriptor: Any, values: dict[str, Any]
) -> None:
    try:
        typed = validate_params(descriptor, values)
    except BiomeroError:
        return
    json.dumps(typed, allow_nan=False)  # what params.json will hold


# -- OMERO script input reading --------------------------------------------------------

FUZZ_DESCRIPTOR = parse_descriptor(
    json.dumps(
        {
            "schema-version": "cytomine-0.1",
            "name": "Seg",
            "container-image": {"image": "org/seg"},
            "inputs": [
                {"id": "sigma", "type": "Number", "default-value": 1.5, "minimum": 0},
                {"id": "mode", "type": "String", "value-choices": ["a", "b"]},
                {"id": "flag", "type": "Boolean", "default-value": False},
            ],
        }
    ),
    source="fuzz",
)
CATALOG = forms.Catalog(
    (Workflow("seg", "v1", None, FUZZ_DESCRIPTOR),),  # type: ignore[arg-type]
)
form_keys = st.sampled_from(
    [
        forms.DATA_TYPE,
        forms.IDS,
        forms.OUTPUT_ATTACH,
        forms.OUTPUT_NEW_DATASET,
        forms.OUTPUT_DATASET_ID,
        forms.OUTPUT_CSV_TABLE,
        forms.OUTPUT_CREATE_ROIS,
        forms.ROI_SHAPE,
        forms.WAIT,
        forms.WAIT_MINUTES,
        forms.BATCH_SIZE,
        "seg",
        "seg_Version",
        "seg_|_sigma",
        "seg_|_mode",
        "seg_|_flag",
    ]
)
form_values = st.one_of(
    json_values, st.sampled_from(["Image", "Dataset", "Plate", "v1", True]), st.lists(st.integers())
)


@given(st.dictionaries(form_keys, form_values))
@example({forms.DATA_TYPE: "Image", forms.IDS: ["abc"]})
@example({forms.DATA_TYPE: "Image", forms.IDS: 5})
@example({forms.DATA_TYPE: "Image", forms.IDS: [1.5e300]})
@example({forms.DATA_TYPE: "Image", forms.IDS: [float("nan")]})
@example({forms.OUTPUT_DATASET_ID: "x"})
@example({forms.OUTPUT_DATASET_ID: float("inf")})
@example({forms.WAIT: True, forms.WAIT_MINUTES: "soon"})
@example({forms.WAIT: True, forms.WAIT_MINUTES: float("nan")})
@example({forms.ROI_SHAPE: ["Polygon"]})
@example({"seg": True, "seg_Version": ["v1"]})
def test_fuzz_script_input_reading_gives_answers_or_a_clear_error(inputs: dict[str, Any]) -> None:
    for read in (
        forms.read_selection,
        forms.read_outputs,
        forms.read_wait,
        lambda i: forms.read_choices(i, CATALOG),
    ):
        with contextlib.suppress(BiomeroError):
            read(inputs)


# -- input images (our own reader of what users and OMERO write) -----------------------


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=2**70))
def test_fuzz_tiff_header_rule_answers_for_any_bytes(head: bytes, size: int) -> None:
    result = tiff_problem(head, size)
    assert result is None or isinstance(result, str)


@given(
    st.sampled_from([".zattrs", "zarr.json"]),
    st.one_of(json_values.map(json.dumps), st.text(max_size=60), st.just("[" * 5000)),
)
@example("zarr.json", json.dumps({"attributes": {"ome": {"multiscales": [{"datasets": [{}]}]}}}))
@example(".zattrs", json.dumps({"multiscales": [{"datasets": [{"path": "/etc"}]}]}))
def test_fuzz_ome_zarr_metadata_gives_an_image_or_input_error(name: str, text: str) -> None:
    image = _SCRATCH / "image.zarr"
    shutil.rmtree(image, ignore_errors=True)
    image.mkdir()
    (image / name).write_text(text, encoding="utf-8", errors="surrogatepass")
    if name == ".zattrs":
        (image / ".zgroup").write_text('{"zarr_format": 2}')
    with contextlib.suppress(BiomeroError):
        check_images([image])
