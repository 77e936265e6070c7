"""Setting up: channels test, config check."""

from __future__ import annotations

import click
from tabulate import tabulate

from watcher.cli.base import WatcherGroup, cli, config_of


@cli.group(cls=WatcherGroup)
def channels() -> None:
    """Notification channels."""


@channels.command("test")
@click.argument("name", required=False)
@click.pass_context
def channels_test(ctx: click.Context, name: str | None) -> None:
    """Send a test notification to every channel (or only NAME); exit 1 if any fails.

    \b
    Example:
        watcher channels test ops-slack
    """
    from watcher.errors import NotFound
    from watcher.notify import send

    config = config_of(ctx)
    chosen = [channel for channel in config.channels if name in (None, channel.name)]
    if name and not chosen:
        raise NotFound(f"no channel named {name!r} in {config.path}")
    rows, failed = [], False
    for channel in chosen:
        outcome, duration = send(channel, "watcher test notification",
                                 f"This is a test from watcher on channel **{channel.name}**. No action needed.")
        failed |= outcome.outcome != "success"
        rows.append([channel.name, outcome.outcome, f"{duration}ms", "" if outcome.outcome == "success" else outcome.detail])
    click.echo(tabulate(rows, headers=["channel", "outcome", "time", "detail"]))
    ctx.exit(1 if failed else 0)


@cli.group("config", cls=WatcherGroup)
def config_group() -> None:
    """The configuration file."""


@config_group.command("check")
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the config file and the rule and guidance files it names; list every problem.

    \b
    Example:
        watcher --config watcher.toml config check
    """
    from watcher import guidance, rules

    config = config_of(ctx)
    rules.load_rules(config.rule_files)
    guidance.load_playbooks(config.guidance_files)
    click.echo(f"{config.path}: OK — {len(config.accounts)} accounts, {len(config.channels)} channels, "
               f"database {config.database}")
