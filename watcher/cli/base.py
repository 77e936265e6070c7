"""The root of the command line: the `watcher` group, the error boundary, logging and config loading."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from watcher import __version__
from watcher.config import Config, find_config, load_config
from watcher.errors import ConfigError, WatcherError
from watcher.secrets import redact_logs

log = logging.getLogger("watcher")
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class ConfigProblem(click.ClickException):
    """A bad configuration: every problem on its own line, exit code 2."""

    exit_code = 2

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.error = error

    def format_message(self) -> str:
        count = len(self.error.problems)
        lines = [f"{self.error.path}: {count} problem{'s' if count != 1 else ''}"]
        lines += [f"  {problem}" for problem in self.error.problems]
        return "\n".join(lines)

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


class WatcherGroup(click.Group):
    """Turns the project's exceptions into one clear line (no traceback) for every subcommand."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as error:
            raise ConfigProblem(error) from None
        except WatcherError as error:
            raise click.ClickException(str(error)) from None


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    # Under systemd the journal stamps every line itself.
    fmt = "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=max(logging.DEBUG, level), format=fmt, stream=sys.stderr)
    # The scheduler logs every job run at INFO; keep that for -vv.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


@click.group(cls=WatcherGroup, context_settings=CONTEXT_SETTINGS)
@click.option("--config", "config_path", metavar="PATH",
              help="Config file. Default: $WATCHER_CONFIG, ./watcher.toml, ~/.config/watcher/watcher.toml, "
                   "/etc/watcher/watcher.toml.")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-v info, -vv debug).")
@click.version_option(__version__, prog_name="watcher")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int) -> None:
    """Watch sellers' mailboxes for marketplace account notices and alert with next steps.

    \b
    Example:
        watcher --config watcher.toml check
    """
    setup_logging(verbose)
    ctx.obj = {"config_path": config_path}


def config_of(ctx: click.Context) -> Config:
    config = load_config(find_config(ctx.obj["config_path"]))
    redact_logs([account.password for account in config.accounts] + [channel.url for channel in config.channels])
    for warning in config.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return config


def engine_of(ctx: click.Context) -> Any:
    from watcher.pipeline import Engine

    return Engine(config_of(ctx))
