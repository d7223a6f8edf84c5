"""The environment of child processes that never call the Hub: no Hub token reaches them.

uv, the downstream probes' interpreters and the check workers load local files only. Whatever
runs there (a release's import-time code, a planted interpreter, a hostile checkpoint's loader)
must not find the caller's write token, so these variables are dropped and huggingface_hub is
told not to read the stored login on its own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

HUB_TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH")
NO_IMPLICIT_TOKEN = {"HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}


def without_hub_tokens(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `environ` (default: this process's) for a child that never calls the Hub."""
    source = os.environ if environ is None else environ
    return {
        **{name: value for name, value in source.items() if name not in HUB_TOKEN_VARS},
        **NO_IMPLICIT_TOKEN,
    }


def drop_hub_tokens_here() -> None:
    """The same for this process itself (a forkserver and the workers it forks)."""
    for name in HUB_TOKEN_VARS:
        os.environ.pop(name, None)
    os.environ.update(NO_IMPLICIT_TOKEN)
