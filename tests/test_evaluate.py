"""`watcher classify --eval` and `watcher rules test`: accuracy over labels, and why each field has its value."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from watcher.cli import cli

DEMO = Path(__file__).resolve().parent.parent / "watcher" / "demo"


def labels(tmp_path: Path, entries: list[dict[str, object]]) -> Path:
    for entry in entries:
        shutil.copy(DEMO / str(entry["file"]), tmp_path / str(entry["file"]))
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(entries))
    return path


def test_eval_reports_full_accuracy_on_the_corpus(corpus_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["classify", "--eval", str(corpus_dir / "labels.json")])
    assert result.exit_code == 0, result.output
    for field in ("relevant", "platform", "kind", "reason", "authenticity", "language", "deadline", "marketplace"):
        assert any(line.split() == [field, "82/82", "100.0%"] for line in result.output.splitlines()), field
    assert "ids (recall)" in result.output and "mismatches" not in result.output


def test_eval_lists_every_mismatch_and_exits_1(tmp_path: Path) -> None:
    path = labels(tmp_path, [
        {"file": "01-deactivated.eml", "relevant": True, "platform": "amazon", "kind": "account_deactivated",
         "reason": "related_account", "authenticity": "verified", "ids": ["B0AAAAAAAA"]},
        {"file": "04-order.eml", "relevant": True, "platform": "amazon", "kind": "funds_held"},
    ])
    result = CliRunner().invoke(cli, ["classify", "--eval", str(path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.split() == ["kind", "1/2", "50.0%"] for line in lines)
    assert any(line.split() == ["ids", "(recall)", "0/1", "0.0%"] for line in lines)
    mismatch_rows = [line.split() for line in lines[lines.index("4 mismatches:") + 3:]]
    assert mismatch_rows == [["01-deactivated.eml", "ids", "B0AAAAAAAA", "null"],
                             ["04-order.eml", "relevant", "True", "False"],
                             ["04-order.eml", "platform", "amazon", "null"],
                             ["04-order.eml", "kind", "funds_held", "null"]]


def test_rules_test_names_the_rule_and_signal_behind_each_field() -> None:
    result = CliRunner().invoke(cli, ["rules", "test", str(DEMO / "02-verify.eml")])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.output.splitlines()[3:] if line.strip()}
    assert "sender domain" in rows["platform"] and "amazon.com" in rows["platform"]
    assert "deactivation_pending" in rows["kind"]
    assert "within 10 days" in rows["deadline"]
    assert "dmarc=pass" in rows["authenticity"] or "dkim=pass" in rows["authenticity"]
