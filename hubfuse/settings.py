"""Every user-facing setting, declared once: its name, type or choices, default, flag, environment
variable, batch-spec key and help text.

The commands' shared click options are generated from these declarations (`hubfuse.cli.flags`),
the batch spec schema takes its keys' types and choices from them (`hubfuse.spec`), and this is the
one module that reads the environment for a setting: everything else calls `Setting.value()` or
the accessors at the bottom. Not here: the check worker's internal variables (set by hubfuse for
its own child processes), and transformers' own `USE_HUB_KERNELS`, read by
`check/transformers_fusion.py` as transformers reads it (that file must stay importable without
hubfuse: the downstream probe loads it by path in other releases' environments).

Resolution, once per command (`resolve`): the flag, else the batch spec's key, else the
environment variable, else the default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from hubfuse.errors import BadInputError

T = TypeVar("T")

MODES = ("auto", "full", "targeted")
DEFAULT_TIMEOUT_S = 1800.0


def _present(text: str) -> bool:
    """Set at all: any non-empty value switches it on (`0` included, as it always has)."""
    return bool(text)


def _truthy(text: str) -> bool:
    """transformers' truthy values for an environment switch (ENV_VARS_TRUE_VALUES)."""
    return text.upper() in {"1", "ON", "YES", "TRUE"}


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if number < 1:
        raise ValueError(f"{number} is not at least 1")
    return number


def _seconds(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not number >= 0:  # NaN included
        raise ValueError(f"{text!r} is not a number of seconds")
    return number


def _path(text: str) -> Path:
    return Path(text)


@dataclass(frozen=True)
class Setting(Generic[T]):
    name: str  # the Python name, and the batch spec key where `in_spec`
    help: str
    default: T
    parse: Callable[[str], T]  # text (environment, flag) to value; raises ValueError
    flag: str | None = None
    env: str | None = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    multiple: bool = False  # a repeatable flag / a list in the spec
    in_spec: bool = False
    strip: bool = True  # surrounding blanks of an environment value are not part of it

    def from_env(self, environ: Mapping[str, str] | None = None) -> T | None:
        """The environment's value, None when unset or empty; a bad one is refused by name."""
        if self.env is None:
            return None
        raw = (os.environ if environ is None else environ).get(self.env)
        if raw is None:
            return None
        text = raw.strip() if self.strip else raw
        if not text:
            return None
        try:
            return self.parse(text)
        except ValueError as exc:
            raise BadInputError(f"${self.env}: {exc}") from None

    def value(self) -> T:
        """The environment's value, else the default."""
        found = self.from_env()
        return self.default if found is None else found

    def resolve(self, *given: T | None) -> T:
        """The first value given (the flag, then the spec), else the environment, else the default."""
        for candidate in given:
            if candidate is not None:
                return candidate
        return self.value()

    def spec_schema(self) -> dict[str, Any]:
        """This setting's JSON schema as a batch spec key."""
        if self.choices:
            item: dict[str, Any] = {"type": "string", "enum": list(self.choices)}
        elif isinstance(self.default, bool):
            item = {"type": "boolean"}
        elif isinstance(self.default, float):
            item = {"type": "number", "minimum": 0}
        else:
            item = {"type": "string", "minLength": 1}
        return {"type": "array", "items": item} if self.multiple else item


# -- the commands' settings (flags; some are batch spec keys too) --------------------------------

FAMILIES: Setting[tuple[str, ...]] = Setting(
    "families",
    "Fusion family (repeatable). Default: every family transformers registers that hubfuse can verify.",
    default=(),
    parse=lambda text: (text,),
    flag="--family",
    metavar="NAME",
    multiple=True,
    in_spec=True,
)
MODE: Setting[str] = Setting(
    "mode",
    "full: load the whole model; targeted: headers and the touched tensors only (huge repos); "
    "auto: full when the model fits this machine's memory and disk with room to spare.",
    default="auto",
    parse=str,
    flag="--mode",
    choices=MODES,
    in_spec=True,
)
TIMEOUT: Setting[float] = Setting(
    "timeout_s",
    "Seconds allowed for each model load.",
    default=DEFAULT_TIMEOUT_S,
    parse=_seconds,
    flag="--timeout",
)
DOWNSTREAM_VERSIONS: Setting[str | None] = Setting(
    "downstream_versions",
    "transformers releases whose config-only load gates the verdict: a PEP 440 specifier "
    "('>=5.21'; 'A || B' for a union) or 'none'. Default: the latest patch of every release that "
    "reads fusion_config plus the newest one before them ($HUBFUSE_DOWNSTREAM_VERSIONS replaces "
    "that default). Releases of the default outside SPEC are still checked and reported, not gating.",
    default=None,
    parse=str,  # its grammar: hubfuse.check.downstream.parse_spec (the spec and the plan use it)
    flag="--downstream-versions",
    metavar="SPEC",
    in_spec=True,
)
TRUST_REMOTE_CODE: Setting[bool] = Setting(
    "trust_remote_code",
    "Allow a repo's own Python code (auto_map). Only for repos you trust.",
    default=False,
    parse=_truthy,
    flag="--trust-remote-code",
)
DRY_RUN: Setting[bool] = Setting(
    "dry_run", "Do everything but the writes.", default=False, parse=_truthy, flag="--dry-run", in_spec=True
)
JSON: Setting[bool] = Setting(
    "as_json",
    "Print one JSON document on stdout (logs stay on stderr).",
    default=False,
    parse=_truthy,
    flag="--json",
)

COMMAND_SETTINGS = (FAMILIES, MODE, TIMEOUT, DOWNSTREAM_VERSIONS, TRUST_REMOTE_CODE, DRY_RUN, JSON)
SPEC_SETTINGS = tuple(s for s in COMMAND_SETTINGS if s.in_spec)

# -- the environment ------------------------------------------------------------------------------

HF_ENDPOINT: Setting[str | None] = Setting(
    "endpoint", "The Hub to talk to (default: the Hugging Face Hub).", None, str, env="HF_ENDPOINT"
)
HF_TOKEN: Setting[str | None] = Setting(
    "token", "Hub token (else the stored login).", None, str, env="HF_TOKEN", strip=False
)
DEBUG: Setting[bool] = Setting(
    "debug", "Show the traceback of an internal error.", False, _present, env="HUBFUSE_DEBUG"
)
DOWNSTREAM_DEFAULT: Setting[str | None] = Setting(
    "downstream_default",
    "Replaces the default downstream matrix (a specifier as --downstream-versions, or none).",
    None,
    str,
    env="HUBFUSE_DOWNSTREAM_VERSIONS",
)
DOWNSTREAM_JOBS: Setting[int] = Setting(
    "downstream_jobs",
    "Downstream environments run side by side (capped by memory).",
    2,
    _positive_int,
    env="HUBFUSE_DOWNSTREAM_JOBS",
)
ENVS: Setting[Path | None] = Setting(
    "envs",
    "The downstream environments' folder (default: $HF_HOME/hubfuse/envs).",
    None,
    _path,
    env="HUBFUSE_ENVS",
)
UV_CACHE: Setting[Path | None] = Setting(
    "uv_cache",
    "uv's cache for the environments (default: $HUBFUSE_ENVS/uv-cache).",
    None,
    _path,
    env="UV_CACHE_DIR",
)
RELEASES_TTL: Setting[float] = Setting(
    "releases_ttl_s",
    "Seconds the package index's transformers releases stay cached.",
    24 * 3600.0,
    _seconds,
    env="HUBFUSE_RELEASES_TTL_S",
)
RETRIES: Setting[int] = Setting(
    "retries", "Attempts of each Hub call before it fails.", 5, _positive_int, env="HUBFUSE_RETRIES"
)
RETRY_BASE: Setting[float] = Setting(
    "retry_base_s",
    "First back-off between Hub call attempts (doubling).",
    1.0,
    _seconds,
    env="HUBFUSE_RETRY_BASE_S",
)
ERROR_BACKOFF: Setting[float] = Setting(
    "error_backoff_s",
    "A batch run's first wait before retrying a repo that could not be checked (doubling).",
    3600.0,
    _seconds,
    env="HUBFUSE_ERROR_BACKOFF_S",
)
LEDGER_FLUSH_EVERY: Setting[int] = Setting(
    "ledger_flush_every",
    "Ledger records written every N repos.",
    10,
    _positive_int,
    env="HUBFUSE_LEDGER_FLUSH_EVERY",
)
LEDGER_FLUSH: Setting[float] = Setting(
    "ledger_flush_s", "Ledger records written every T seconds.", 60.0, _seconds, env="HUBFUSE_LEDGER_FLUSH_S"
)
KILL_SWITCH: Setting[bool] = Setting(
    "kill_switch", "Stops a batch run's writes (any value).", False, _present, env="HUBFUSE_KILL_SWITCH"
)
NO_VERDICT_CACHE: Setting[bool] = Setting(
    "no_verdict_cache",
    "Turns the verdict cache off (any value).",
    False,
    _present,
    env="HUBFUSE_NO_VERDICT_CACHE",
)
VERDICT_CACHE: Setting[Path | None] = Setting(
    "verdict_cache",
    "The verdict cache's folder (default: $HF_HOME/hubfuse/verdicts).",
    None,
    _path,
    env="HUBFUSE_CACHE",
    strip=False,
)
CELL_CACHE: Setting[str | None] = Setting(
    "cell_cache",
    "The downstream cells' local cache: a folder, or none (default: $HF_HOME/hubfuse/cells).",
    None,
    str,
    env="HUBFUSE_CELL_CACHE",
)
HUB_DATA: Setting[Path | None] = Setting(
    "hub_data",
    "The local hub's data folder (`hubfuse hub serve --data`; default .hubfuse-demo/hub).",
    None,
    _path,
    env="HUBFUSE_HUB_DATA",
    strip=False,
)

ENVIRONMENT_SETTINGS = (
    HF_ENDPOINT,
    HF_TOKEN,
    DEBUG,
    DOWNSTREAM_DEFAULT,
    DOWNSTREAM_JOBS,
    ENVS,
    UV_CACHE,
    RELEASES_TTL,
    RETRIES,
    RETRY_BASE,
    ERROR_BACKOFF,
    LEDGER_FLUSH_EVERY,
    LEDGER_FLUSH,
    KILL_SWITCH,
    NO_VERDICT_CACHE,
    VERDICT_CACHE,
    CELL_CACHE,
    HUB_DATA,
)

# -- where hubfuse runs (set by CI, not by a user) --------------------------------------------------


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def on_ci() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("GITHUB_ACTIONS"))


def step_summary_path() -> str | None:
    """GitHub Actions' job summary file, when there is one."""
    return os.environ.get("GITHUB_STEP_SUMMARY") or None


def markdown_table() -> str:
    """The README's settings table (`python -m hubfuse.settings` prints it)."""
    rows = [
        "| setting | flag | spec key | environment | default | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for setting in COMMAND_SETTINGS + ENVIRONMENT_SETTINGS:
        default = "" if setting.default in (None, ()) else f"`{setting.default}`"
        if setting.choices:
            default += f" (`{'`, `'.join(setting.choices)}`)"
        cells = [
            f"`{setting.name}`",
            f"`{setting.flag}`" if setting.flag else "",
            f"`{setting.name}`" if setting.in_spec else "",
            f"`{setting.env}`" if setting.env else "",
            default,
            setting.help.replace("|", "\\|"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
