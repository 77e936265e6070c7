"""The command line. The one place that prints, picks exit codes and turns errors into one clear line."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from watcher import __version__
from watcher.config import Config, find_config, load_config
from watcher.errors import ConfigError, WatcherError
from watcher.model import KINDS, Classification, Event, Guidance
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


def _config(ctx: click.Context) -> Config:
    config = load_config(find_config(ctx.obj["config_path"]))
    redact_logs([account.password for account in config.accounts] + [channel.url for channel in config.channels])
    for warning in config.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return config


def _engine(ctx: click.Context) -> Any:
    from watcher.pipeline import Engine

    return Engine(_config(ctx))


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check every account once, send due notifications, and exit.

    Exit status 0 when every account was checked, 1 when any failed (the others are still processed).

    \b
    Example:
        watcher check
    """
    from watcher.pipeline import check_account, deliver_due
    from watcher.store import Store

    engine = _engine(ctx)
    rows, failed = [], False
    for account in engine.config.accounts:
        summary = check_account(engine, account)
        failed |= not summary.ok
        errors = [summary.error] if summary.error else [f"{f.folder}: {f.error}" for f in summary.folders if f.error]
        rows.append([account.name, "ok" if summary.ok else "FAILED", sum(f.new for f in summary.folders),
                     sum(f.fetched for f in summary.folders), len(summary.events), f"{summary.seconds:.2f}s",
                     "; ".join(errors)])
    with Store(engine.config.database) as store:
        delivered = deliver_due(engine, store)
    click.echo(tabulate(rows, headers=["account", "status", "new", "fetched", "events", "time", "error"]))
    click.echo(f"deliveries: {delivered.sent} sent, {delivered.retrying} to retry, {delivered.failed} failed")
    ctx.exit(1 if failed else 0)


@cli.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run as a daemon: check every account every poll_seconds until SIGTERM or SIGINT.

    \b
    Example:
        watcher --config /etc/watcher/watcher.toml run
    """
    from watcher.daemon import Daemon

    engine = _engine(ctx)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    Daemon(engine).run()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object: folders and channels.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show each account and folder's connection state, last check and last error, and each channel's
    pending and failed deliveries (as the running watcher last recorded them).

    \b
    Example:
        watcher status
    """
    from watcher.store import Store

    config = _config(ctx)
    with Store(config.database) as store:
        recorded = {(row["account"], row["folder"]): row for row in store.folder_states()}
        deliveries = {row["channel"]: row for row in store.delivery_counts()}
    folders = []
    for account in config.accounts:
        for folder in account.folders:
            row = recorded.get((account.name, folder), {})
            folders.append({"account": account.name, "folder": folder, "state": row.get("state", "never checked"),
                            "since": row.get("since"), "last_check_at": row.get("last_check_at"),
                            "last_error": row.get("last_error"), "last_error_at": row.get("last_error_at")})
    channels = [{"channel": channel.name, "pending": (deliveries.get(channel.name) or {}).get("pending") or 0,
                 "sent": (deliveries.get(channel.name) or {}).get("sent") or 0,
                 "failed": (deliveries.get(channel.name) or {}).get("failed") or 0} for channel in config.channels]
    if as_json:
        click.echo(json.dumps({"folders": folders, "channels": channels}, indent=2))
        return
    click.echo(tabulate([[f["account"], f["folder"], f["state"], f["since"] or "", f["last_check_at"] or "",
                          f["last_error"] or ""] for f in folders],
                        headers=["account", "folder", "state", "since", "last successful check", "last error"]))
    if channels:
        click.echo("")
        click.echo(tabulate([[c["channel"], c["pending"], c["sent"], c["failed"]] for c in channels],
                            headers=["channel", "pending", "sent", "failed"]))


# --- events ---------------------------------------------------------------------------------------

@cli.group(cls=WatcherGroup)
def events() -> None:
    """Query the event log."""


def parse_since(value: str | None) -> datetime | None:
    """'7d', '12h', '30m' → that long ago; 'YYYY-MM-DD' → that day (UTC)."""
    if not value:
        return None
    match = re.fullmatch(r"(\d+)\s*([dhm])", value.strip())
    if match:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
        return datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
    except ValueError:
        raise click.BadParameter("use a duration like 7d, 12h, 30m or a date YYYY-MM-DD", param_hint="--since")


@events.command("list")
@click.option("--since", help="Only events detected since: 7d, 12h, 30m or YYYY-MM-DD.")
@click.option("--platform", help="Only this platform, e.g. amazon.")
@click.option("--kind", type=click.Choice(KINDS), metavar="KIND",
              help="Only this kind: account_deactivated, deactivation_pending, security_lock, funds_held, …")
@click.option("--account", help="Only this account (config name).")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="At most this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def events_list(ctx: click.Context, since: str | None, platform: str | None, kind: str | None,
                account: str | None, limit: int, as_json: bool) -> None:
    """List events, newest first.

    \b
    Example:
        watcher events list --since 7d --platform amazon
    """
    from watcher.store import Store

    config = _config(ctx)
    with Store(config.database) as store:
        found = store.events(since=parse_since(since), platform=platform, kind=kind, account=account, limit=limit)
    if as_json:
        for event in found:
            click.echo(json.dumps(event_json(event), ensure_ascii=False))
        return
    click.echo(events_table(found))


def events_table(found: list[Event]) -> str:
    """Return ``found`` as an aligned table (or "no events")."""
    if not found:
        return "no events"
    rows = [[e.id, e.detected_at.strftime("%Y-%m-%d %H:%M"), e.store, e.classification.platform,
             e.classification.kind, e.classification.reason, e.classification.severity,
             e.classification.authenticity, e.classification.deadline or "", e.status] for e in found]
    return str(tabulate(rows, headers=["id", "detected (UTC)", "store", "platform", "kind", "reason", "severity",
                                       "authenticity", "deadline", "status"]))


@events.command("show")
@click.argument("event_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="The event as one JSON object.")
@click.pass_context
def events_show(ctx: click.Context, event_id: int, as_json: bool) -> None:
    """Show one event: what happened, why, deadline, next steps and deliveries.

    \b
    Example:
        watcher events show 12
    """
    from watcher.notify import render
    from watcher.store import Store

    engine = _engine(ctx)
    with Store(engine.config.database) as store:
        event = store.event(event_id)
        deliveries = store.deliveries_for(event_id)
    playbook, language = engine.guidance_for(event)
    if as_json:
        click.echo(json.dumps({**event_json(event, playbook), "deliveries": deliveries}, ensure_ascii=False, indent=2))
        return
    rendered = render(event, playbook, language)
    click.echo(rendered.title)
    click.echo(rendered.body)
    click.echo("")
    click.echo(tabulate([[d["channel"], d["status"], d["attempts"], d["last_attempt_at"] or "", d["last_error"] or ""]
                         for d in deliveries], headers=["channel", "delivery", "attempts", "last attempt", "error"]))


def classification_json(result: Classification) -> dict[str, Any]:
    data = asdict(result)
    data.pop("evidence")
    data["facts"] = dict(result.facts)
    data["ids"] = list(result.ids)
    data["deadline"] = result.deadline.isoformat() if result.deadline else None
    return data


def guidance_json(playbook: Guidance | None) -> dict[str, Any] | None:
    return {"title": playbook.title, "steps": list(playbook.steps), "source": playbook.source} if playbook else None


def event_json(event: Event, playbook: Guidance | None = None) -> dict[str, Any]:
    return {
        "id": event.id, "account": event.account, "store": event.store, "folder": event.folder,
        "uid": event.uid, "uidvalidity": event.uidvalidity, "status": event.status,
        "received_at": event.received_at.isoformat() if event.received_at else None,
        "detected_at": event.detected_at.isoformat(),
        **classification_json(event.classification),
        "subject": event.subject, "sender": event.sender, "message_id": event.message_id,
        **({"guidance": guidance_json(playbook)} if playbook else {}),
    }


# --- classify ---------------------------------------------------------------------------------------

@cli.command("classify")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with every event field.")
@click.option("--eval", "labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Evaluate against a labels.json (the corpus format): per-field accuracy and every mismatch.")
@click.pass_context
def classify_command(ctx: click.Context, files: tuple[Path, ...], as_json: bool, labels: Path | None) -> None:
    """Classify .eml files without a mailbox (a config is used only when --config is given).

    With --eval, classify the files a labels.json names and report accuracy; exit 1 on any mismatch.

    \b
    Example:
        watcher classify --json notice.eml
        watcher classify --eval ../shared/corpus/labels.json
    """
    from watcher import guidance, parse, rules
    from watcher.classify import classify

    config = _config(ctx) if ctx.obj["config_path"] else None
    rule_set = rules.load_rules(config.rule_files if config else ())
    if labels is not None:
        _print_evaluation(ctx, labels, rule_set, config.trusted_authserv_ids if config else ())
    if not files:
        raise click.UsageError("give one or more .eml files (or --eval labels.json)")
    playbooks = guidance.load_playbooks(config.guidance_files if config else ())
    trusted = config.trusted_authserv_ids if config else ()
    wanted_language = config.guidance_language if config else "auto"
    rows, failed = [], False
    for path in files:
        try:
            content = path.read_bytes()
        except OSError as error:
            click.echo(f"Error: {path}: {error.strerror}", err=True)
            failed = True
            continue
        message = parse.parse_message(content)
        try:
            result = classify(message, rule_set, trusted_authserv_ids=trusted)
        except Exception as error:  # a classifier bug on one file must not hide the others
            click.echo(f"Error: {path}: could not be classified ({error.__class__.__name__}: {error})", err=True)
            failed = True
            continue
        playbook = None
        if result.relevant:
            language = (result.language or "en") if wanted_language == "auto" else wanted_language
            playbook = playbooks.lookup(result.platform, result.kind, result.reason, result.authenticity, language)
        if as_json:
            click.echo(json.dumps({"file": str(path), **classification_json(result),
                                   "guidance": guidance_json(playbook), "subject": message.subject,
                                   "sender": message.from_address, "message_id": message.message_id},
                                  ensure_ascii=False))
        else:
            rows.append([path.name, "yes" if result.relevant else "no", result.platform or "", result.kind or "",
                         result.reason or "", result.authenticity or "", result.language or "",
                         result.deadline or "", result.marketplace or "", " ".join(result.ids)])
    if rows:
        click.echo(tabulate(rows, headers=["file", "relevant", "platform", "kind", "reason", "authenticity",
                                           "language", "deadline", "marketplace", "ids"]))
    ctx.exit(1 if failed else 0)


def _print_evaluation(ctx: click.Context, labels: Path, rule_set: Any, trusted: tuple[str, ...]) -> None:
    from watcher.evaluate import EVALUATED_FIELDS, evaluate

    result = evaluate(labels, rule_set, trusted)
    rows = [[field, f"{result.correct[field]}/{result.messages}", f"{100 * result.accuracy(field):.1f}%"]
            for field in EVALUATED_FIELDS]
    rows.append(["ids (recall)", f"{result.ids_found}/{result.ids_expected}", f"{100 * result.ids_recall:.1f}%"])
    click.echo(tabulate(rows, headers=["field", "correct", "accuracy"]))
    if result.mismatches:
        click.echo(f"\n{len(result.mismatches)} mismatches:")
        click.echo(tabulate([[m.file, m.field, _as_label(m.expected), _as_label(m.got)] for m in result.mismatches],
                            headers=["file", "field", "expected", "got"]))
    ctx.exit(1 if result.mismatches else 0)


def _as_label(value: object) -> object:
    """Show a value as labels.json writes it (None as null)."""
    return "null" if value is None else value


@cli.group("rules", cls=WatcherGroup)
def rules_group() -> None:
    """The classification rules."""


@rules_group.command("test")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def rules_test(ctx: click.Context, file: Path) -> None:
    """Show how FILE.eml is classified: which rule fired on which signal, and why each field has its value.

    \b
    Example:
        watcher rules test notice.eml
    """
    from watcher import parse, rules
    from watcher.classify import classify
    from watcher.evaluate import explain

    config = _config(ctx) if ctx.obj["config_path"] else None
    rule_set = rules.load_rules(config.rule_files if config else ())
    message = parse.parse_message(file.read_bytes())
    result = classify(message, rule_set, trusted_authserv_ids=config.trusted_authserv_ids if config else ())
    click.echo(f"{file.name}: {message.subject!r} from {message.from_address or '(no sender)'}")
    if message.defects:
        click.echo(f"defects: {', '.join(message.defects)}")
    click.echo(tabulate(explain(result), headers=["field", "value", "rule", "signal"]))


# --- channels & config ------------------------------------------------------------------------------

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

    config = _config(ctx)
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

    config = _config(ctx)
    rules.load_rules(config.rule_files)
    guidance.load_playbooks(config.guidance_files)
    click.echo(f"{config.path}: OK — {len(config.accounts)} accounts, {len(config.channels)} channels, "
               f"database {config.database}")


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the demo folder (config, database) in place and print its path.")
def demo(keep: bool) -> None:
    """Show watcher end to end: a throwaway local Dovecot with sample mail, one check, the notifications.

    Needs the Debian package dovecot-imapd (the demo starts its own private instance on 127.0.0.1).

    \b
    Example:
        watcher demo
    """
    from watcher.demo import run_demo

    run_demo(keep=keep, echo=click.echo)


def main() -> None:
    cli(prog_name="watcher")
