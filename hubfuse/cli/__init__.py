"""The `hubfuse` command line: thin click commands over the pipeline, one module per command group.

Every expected failure is a `HubfuseError`: one line on stderr and its exit code (see
`hubfuse.errors.ExitCode`). `--json` documents go to stdout, everything else to stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hubfuse import __version__, settings
from hubfuse.cli import batch, check, publish
from hubfuse.errors import HubfuseError
from hubfuse.localhub.cli import hub
from hubfuse.log import log


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HubfuseError as exc:
            log.error(str(exc))
            sys.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            log.error("interrupted")
            sys.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:
            if settings.DEBUG.value():
                raise
            first_line = (str(exc).strip().splitlines() or [""])[0]
            log.error(
                f"internal error: {type(exc).__name__}: {first_line} (set HUBFUSE_DEBUG=1 for the traceback)"
            )
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubfuse")
def main() -> None:
    """Verify transformers fusion mappings and publish them to Hugging Face Hub repos.

    \b
    Exit codes:
      0  every requested family is safe (or: nothing left to do)
      2  bad input: usage, unreadable checkpoint, invalid spec, repo or revision not found
      3  at least one family is unsafe or could not be checked
      4  nothing to fuse in this model
      5  authentication: no token, bad token, read-only token, no write access, gated repo
      6  the Hub kept failing after bounded retries
      7  conflict: the repo moved and could not be re-verified, or a name is taken
      8  a batch run stopped on its budget or the kill switch
    """


for command in (
    check.check,
    check.verify,
    publish.publish,
    publish.demo,
    batch.run,
    batch.plan,
    batch.validate,
    hub,
):
    main.add_command(command)
