"""Classification without a mailbox: classify, classify --eval, rules test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from watcher.cli.base import WatcherGroup, cli, config_of
from watcher.cli.output import classification_json, guidance_json


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

    config = config_of(ctx) if ctx.obj["config_path"] else None
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

    config = config_of(ctx) if ctx.obj["config_path"] else None
    rule_set = rules.load_rules(config.rule_files if config else ())
    message = parse.parse_message(file.read_bytes())
    result = classify(message, rule_set, trusted_authserv_ids=config.trusted_authserv_ids if config else ())
    click.echo(f"{file.name}: {message.subject!r} from {message.from_address or '(no sender)'}")
    if message.defects:
        click.echo(f"defects: {', '.join(message.defects)}")
    click.echo(tabulate(explain(result), headers=["field", "value", "rule", "signal"]))
