"""slurm-config.ini plus environment -> typed, validated, frozen Settings.

Reads the keys BIOMERO users already write ([SSH], [SLURM], [MODELS]/[WORKFLOWS],
[CONVERTERS], [ANALYTICS]) plus our own [WORKER] section. Files are layered key by
key, then environment variables override single keys. Validation collects every
problem and raises one ConfigError with a line per problem, each naming where the
value came from (file or environment variable), the section and the key.

Files are read the way biomero and the OMERO.biomero web plugin read them (Python's
``ConfigParser`` with interpolation), so one file means the same thing to all three:
``%%`` is a literal ``%`` (``sbatch_output = omero-%%j.log``), and a lone ``%`` or a
``%(name)s`` reference is refused with a message saying how to write it. A ``#`` or ``;``
after whitespace starts a comment, also after a value. An empty value means "not set".
Environment variables are taken literally.

The package is read in four parts: ``values`` (parsers of single values), ``keys``
(every key declared once), ``settings`` (the typed result) and ``loading`` (finding,
reading, layering and checking files). Import from here.
"""

from __future__ import annotations

from biomeroworker.config.keys import (
    _WORKFLOW_SUFFIXES as _WORKFLOW_SUFFIXES,
)
from biomeroworker.config.keys import (
    ANALYTICS_KEYS,
    CONVERTERS,
    FIXED_SECTIONS,
    KNOWN_SECTIONS,
    OPAQUE_SECTIONS,
    REST_KEYS,
    SECTION_ALIASES,
    SLURM_KEYS,
    SSH_KEYS,
    WORKER_KEYS,
    WORKFLOWS,
    ZARR_TO_TIFF,
    Key,
)
from biomeroworker.config.loading import (
    CONFIG_ENV,
    ENV_PREFIX,
    SYSTEM_CONFIG,
    UPSTREAM_CONFIG_ENV,
    UPSTREAM_ENV,
    UPSTREAM_OVERRIDES,
    config_named_by_env,
    find_config_files,
    load_settings,
)
from biomeroworker.config.settings import (
    AnalyticsSettings,
    RestSettings,
    Settings,
    SlurmSettings,
    SSHSettings,
    WorkerSettings,
    WorkflowSettings,
)
from biomeroworker.config.settings import (
    _show as _show,
)
from biomeroworker.config.values import (
    DEFAULT_SOURCE,
    redact_url,
)

__all__ = [
    "ANALYTICS_KEYS",
    "CONFIG_ENV",
    "CONVERTERS",
    "DEFAULT_SOURCE",
    "ENV_PREFIX",
    "FIXED_SECTIONS",
    "KNOWN_SECTIONS",
    "OPAQUE_SECTIONS",
    "REST_KEYS",
    "SECTION_ALIASES",
    "SLURM_KEYS",
    "SSH_KEYS",
    "SYSTEM_CONFIG",
    "UPSTREAM_CONFIG_ENV",
    "UPSTREAM_ENV",
    "UPSTREAM_OVERRIDES",
    "WORKER_KEYS",
    "WORKFLOWS",
    "ZARR_TO_TIFF",
    "AnalyticsSettings",
    "Key",
    "RestSettings",
    "SSHSettings",
    "Settings",
    "SlurmSettings",
    "WorkerSettings",
    "WorkflowSettings",
    "config_named_by_env",
    "find_config_files",
    "load_settings",
    "redact_url",
]
