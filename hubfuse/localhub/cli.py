"""`hub` commands: run the local Hub and manage its tokens.

Wired into the main CLI with `cli.add_command(hub)`; also runnable as `python -m hubfuse.localhub`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hubfuse import settings
from hubfuse.localhub.auth import ROLES, add_token

DEFAULT_DATA_DIR = ".hubfuse-demo/hub"
F = TypeVar("F", bound=Callable[..., Any])


def _data_option() -> Callable[[F], F]:
    return click.option(
        "--data",
        "data_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=lambda: settings.HUB_DATA.value() or DEFAULT_DATA_DIR,
        show_default=f"$HUBFUSE_HUB_DATA or {DEFAULT_DATA_DIR}",
        help="Folder holding the Hub's repos, blobs and tokens (created if missing).",
    )


@click.group(name="hub")
def hub() -> None:
    """Run a local Hugging Face Hub-compatible server (for tests and offline demos)."""


@hub.command()
@_data_option()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, type=int, help="Port to listen on (0: any free port).")
@click.option("--no-admin", is_flag=True, help="Disable the /_localhub/ admin API (faults, request log).")
@click.option("--page-size", default=1000, show_default=True, type=int, hidden=True)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(data_dir: Path, host: str, port: int, no_admin: bool, page_size: int, log_level: str) -> None:
    """Serve the Hub; prints its endpoint (for HF_ENDPOINT) on stdout once it accepts connections."""
    from hubfuse.localhub.server import serve as run_server

    def ready(endpoint: str) -> None:
        click.echo(endpoint)
        click.echo(f"pages: open {endpoint}/ in a browser (Ctrl-C stops the hub)", err=True)

    run_server(
        data_dir,
        host=host,
        port=port,
        admin=not no_admin,
        page_size=page_size,
        log_level=log_level,
        on_ready=ready,
    )


@hub.group()
def token() -> None:
    """Manage the Hub's access tokens."""


@token.command("add")
@click.argument("user")
@_data_option()
@click.option("--role", type=click.Choice(ROLES), default="write", show_default=True)
@click.option("--org", "orgs", multiple=True, help="An organization the user belongs to (repeatable).")
def token_add(user: str, data_dir: Path, role: str, orgs: tuple[str, ...]) -> None:
    """Create a token for USER and print it."""
    try:
        click.echo(add_token(data_dir, user, role, orgs))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
