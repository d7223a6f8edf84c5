"""Records the environment of the process importing it: `HUBFUSE_WORKER_PRELOAD=env_recorder`
(with this folder on PYTHONPATH) makes the workers' forkserver import it before any worker forks.
Writes os.environ as JSON to $HUBFUSE_TEST_ENV_RECORD.<pid>."""

from __future__ import annotations

import json
import os

_target = os.environ.get("HUBFUSE_TEST_ENV_RECORD")
if _target:
    with open(f"{_target}.{os.getpid()}", "w") as _handle:
        json.dump(dict(os.environ), _handle)
