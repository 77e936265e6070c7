"""The command line: the one place that prints, picks exit codes and turns errors into one clear line.

Each module registers its commands on the root group in base.py.
"""

from watcher.cli import admin, events, lifecycle, rules, watching  # noqa: F401  (they register their commands)
from watcher.cli import backfill  # noqa: F401  (registers backfill, import)
from watcher.cli import stats  # noqa: F401  (registers stats)
from watcher.cli import auth  # noqa: F401  (registers auth)
from watcher.cli.base import cli
from watcher.cli.output import events_table

__all__ = ["cli", "events_table", "main"]


def main() -> None:
    cli(prog_name="watcher")
