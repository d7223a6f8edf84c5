"""Imported by the forkserver and by every worker when `HUBFUSE_WORKER_PRELOAD=worker_marker`
(this folder on PYTHONPATH): leaves the file `WORKER_MARKER` names, so a test sees whether any
hubfuse process beyond the CLI ever started."""

from __future__ import annotations

import os
from pathlib import Path

Path(os.environ["WORKER_MARKER"]).touch()
