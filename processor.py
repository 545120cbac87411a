# biomeroworker processor: installed over omero-py's omero/processor.py
"""omero-py's script processor, passing the worker's settings on to scripts.

The worker image installs this file as ``omero/processor.py`` and keeps omero-py's
own as ``omero/_processor_upstream.py`` (docs/omero-py.md). Everything upstream
defines is re-exported unchanged; only ProcessI gains a wider environment.
"""

from __future__ import annotations

import os

from omero import _processor_upstream as _upstream
from omero._processor_upstream import *  # noqa: F403

from biomeroworker.omero.processor_env import passed_environment


class BiomeroProcessI(_upstream.ProcessI):
    """Upstream's ProcessI plus the variables processor_env lets through."""

    def make_env(self) -> None:
        super().make_env()
        for name, value in passed_environment(os.environ).items():
            self.env.set(name, value)


# ProcessorI.find_launcher resolves the master's omero.process.python (default
# "omero.processor.ProcessI") through this module, and falls back to the global
# ProcessI of upstream's module when no class is named: both must be ours.
ProcessI = BiomeroProcessI
_upstream.ProcessI = BiomeroProcessI

# A malformed BIOMERO_PASS_ENV stops Processor-0 at start-up, not at each script.
passed_environment(os.environ)
