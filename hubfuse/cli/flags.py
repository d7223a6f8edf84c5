"""The flags several commands share, generated from their declarations in `hubfuse.settings`:
spelled, explained and defaulted the same way everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubfuse import settings
from hubfuse.settings import Setting


def option(setting: Setting[Any], **overrides: Any) -> Any:
    """The click option of `setting`. A flag that is not given reaches the command as None, so that
    the command resolves it once (`Setting.resolve`: flag, spec, environment, default)."""
    assert setting.flag is not None, setting.name
    kwargs: dict[str, Any] = {"help": setting.help}
    if isinstance(setting.default, bool):
        kwargs["is_flag"] = True
    else:
        if setting.choices:
            kwargs["type"] = click.Choice(list(setting.choices))
        elif isinstance(setting.default, float):
            kwargs["type"] = float
        if setting.default not in (None, ()):
            kwargs.update(default=setting.default, show_default=True, callback=_none_unless_given)
        if setting.metavar:
            kwargs["metavar"] = setting.metavar
        if setting.multiple:
            kwargs["multiple"] = True
    kwargs.update(overrides)
    return click.option(setting.flag, setting.name, **kwargs)


def _none_unless_given(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    given = ctx.get_parameter_source(param.name or "") is not click.core.ParameterSource.DEFAULT
    return value if given else None


def _checked_families(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """Refused while the flags are parsed, before any download or model load."""
    from hubfuse.fusion.families import check_requested_families

    check_requested_families(value)
    return value


FAMILY = option(settings.FAMILIES, callback=_checked_families)
JSON = option(settings.JSON)
TRUST_REMOTE_CODE = option(settings.TRUST_REMOTE_CODE)
TIMEOUT = option(settings.TIMEOUT)
DRY_RUN = option(settings.DRY_RUN)
DOWNSTREAM_VERSIONS = option(settings.DOWNSTREAM_VERSIONS)
MODE = option(settings.MODE)


def report_dir_option(what: str) -> Any:
    return click.option(
        "--report-dir", type=click.Path(file_okay=False, path_type=Path), help=f"Also write {what} here."
    )
