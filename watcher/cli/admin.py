"""Setting up: channels test, config check, doctor."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from tabulate import tabulate

from watcher.cli.base import WatcherGroup, cli, config_of

if TYPE_CHECKING:
    from watcher.doctor import Finding


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


@cli.command()
@click.option("--send-test", is_flag=True, help="Also send a real test notification to every channel.")
@click.pass_context
def doctor(ctx: click.Context, send_test: bool) -> None:
    """Check the setup, one line per check (✓ passed, ⚠ warning, ✗ failed with the fix); exit 1 if any failed.

    Checks: the config; the systemd credentials it names; the database (writable, current schema); every
    account logs in and has its folders; the clock against the IMAP servers'; every channel's URL loads
    and its host accepts a connection (nothing is sent without --send-test). An invalid config stops
    the checks after the config and credential lines.

    \b
    Example:
        watcher --config /etc/watcher/watcher.toml doctor --send-test
    """
    from watcher import doctor as checks
    from watcher.secrets import redact_logs

    loaded = checks.check_config(ctx.obj["config_path"])
    findings = list(loaded.findings)
    for finding in findings:
        _show(finding)
    if loaded.path is not None:
        findings.append(checks.check_credentials(loaded.path))
        _show(findings[-1])
    if loaded.config is not None:
        config = loaded.config
        redact_logs([account.password for account in config.accounts] + [channel.url for channel in config.channels])
        for finding in checks.diagnose(config, send_test=send_test):
            findings.append(finding)
            _show(finding)
    ctx.exit(1 if any(finding.status == "failed" for finding in findings) else 0)


_MARKS = {"ok": "✓", "warning": "⚠", "failed": "✗"}


def _show(finding: Finding) -> None:
    line = f"{_MARKS[finding.status]} {finding.subject}: {finding.detail}"
    click.echo(f"{line} — fix: {finding.fix}" if finding.fix else line)
