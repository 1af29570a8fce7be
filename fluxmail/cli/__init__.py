"""The ``fluxmail`` command: send, check, config, providers, audit and dev-server.

``main()`` is the console script; ``run(argv)`` does the work and returns the exit code (tests
call it in-process). Library errors become one readable line and their class's exit code
(``fluxmail.cli.exit_codes``); ``--debug`` anywhere on the line adds the traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from fluxmail.cli import (
    audit,
    check,
    config,
    dev_server,
    drafts,
    mcp,
    outbox,
    preview,
    providers,
    send,
    worker,
)
from fluxmail.cli._common import output, report, set_output
from fluxmail.cli._output import Output
from fluxmail.cli.exit_codes import EXIT_CODES, INTERRUPTED
from fluxmail.errors import FluxMailException

__all__ = ["app", "main", "run"]

app = typer.Typer(
    name="fluxmail",
    help="fluxmail: send test mail, check a connection, read the audit trail, run a dev server.",
    epilog=(
        "Examples:  fluxmail dev-server  |  fluxmail send --to you@example.com --subject Hi "
        "--text Hello  |  fluxmail check  |  fluxmail config  |  fluxmail providers sendgrid"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        # The installed distribution's version (hatch takes it from fluxmail.__version__): the
        # CLI is below the package facade and does not import it.
        from importlib.metadata import version

        output().print(f"fluxmail {version('fluxmail')}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of an error.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Configuration comes from FLUXMAIL_* variables and .env, as FluxMail.from_env() reads it."""


send.register(app)
preview.register(app)
check.register(app)
config.register(app)
providers.register(app)
app.add_typer(audit.app, name="audit")
app.add_typer(outbox.app, name="outbox")
app.add_typer(drafts.app, name="drafts")
dev_server.register(app)
worker.register(app)
mcp.register(app)


def _split_debug(args: list[str]) -> tuple[list[str], bool]:
    """``--debug`` is accepted anywhere before ``--``, not only right after ``fluxmail``."""
    end = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:end]
    return [a for i, a in enumerate(args) if not (i < end and a == "--debug")], debug


def _click() -> Any:
    """Click's exception classes: typer >= 0.2x vendors click as ``typer._click``."""
    import importlib

    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:
        return importlib.import_module("click.exceptions")


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    click = _click()
    args, debug = _split_debug(list(sys.argv[1:] if argv is None else argv))
    out = Output(debug=debug)
    set_output(out)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="fluxmail", standalone_mode=False)
        return int(code) if isinstance(code, int) else 0
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            return 0  # plain `fluxmail` or `fluxmail audit`: the help was printed already
        out.error(exc.format_message())
        where = exc.ctx.command_path if exc.ctx is not None else "fluxmail"
        out.hint(f"run '{where} --help' for the options and examples")
        return EXIT_CODES["usage"]
    except click.ClickException as exc:
        out.error(exc.format_message())
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        out.error("interrupted")
        return INTERRUPTED
    except FluxMailException as exc:
        return report(exc)
    except Exception as exc:
        if debug:
            out.traceback(exc)
        out.error(f"unexpected {type(exc).__name__}: {exc}")
        if not debug:
            out.hint("run again with --debug for the full traceback")
        return EXIT_CODES["error"]


def main() -> None:
    """Console-script entry point (``fluxmail`` and ``python -m fluxmail``)."""
    sys.exit(run())
