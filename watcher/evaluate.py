"""Explain and evaluate the classifier: why each field got its value, and accuracy over a labelled folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watcher.classify import classify
from watcher.errors import WatcherError
from watcher.model import Classification, Evidence
from watcher.parse import parse_message
from watcher.rules import RuleSet

EVALUATED_FIELDS = ("relevant", "platform", "kind", "reason", "authenticity", "language", "deadline", "marketplace")


@dataclass(frozen=True, slots=True)
class Mismatch:
    file: str
    field: str
    expected: object
    got: object


@dataclass(frozen=True, slots=True)
class Evaluation:
    messages: int
    correct: dict[str, int]  # field → messages whose field matched the label
    ids_expected: int
    ids_found: int
    mismatches: tuple[Mismatch, ...]

    def accuracy(self, field: str) -> float:
        return self.correct[field] / self.messages if self.messages else 0.0

    @property
    def ids_recall(self) -> float:
        return self.ids_found / self.ids_expected if self.ids_expected else 1.0


def field_value(result: Classification, field: str) -> object:
    """Return ``field`` of ``result`` as labels.json writes it (dates as ISO strings)."""
    value = getattr(result, field)
    return value.isoformat() if field == "deadline" and value is not None else value


def evaluate(labels_file: Path, rules: RuleSet, trusted_authserv_ids: tuple[str, ...] = ()) -> Evaluation:
    """Classify every file named in ``labels_file`` (a JSON array in the corpus's labels.json format; file
    names relative to its folder) and compare. Raise WatcherError when the labels cannot be read."""
    try:
        labels: list[dict[str, Any]] = json.loads(labels_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise WatcherError(f"{labels_file}: cannot read labels: {error}") from None
    if not isinstance(labels, list) or not all(isinstance(label, dict) and "file" in label for label in labels):
        raise WatcherError(f"{labels_file}: expected a JSON array of objects with a 'file' key")
    correct = dict.fromkeys(EVALUATED_FIELDS, 0)
    mismatches: list[Mismatch] = []
    ids_expected = ids_found = 0
    for label in labels:
        path = labels_file.parent / label["file"]
        try:
            content = path.read_bytes()
        except OSError as error:
            raise WatcherError(f"{path}: {error.strerror}") from None
        result = classify(parse_message(content), rules, trusted_authserv_ids=trusted_authserv_ids)
        for field in EVALUATED_FIELDS:
            if field not in label:
                continue
            got = field_value(result, field)
            if got == label[field]:
                correct[field] += 1
            else:
                mismatches.append(Mismatch(label["file"], field, label[field], got))
        expected_ids = set(label.get("ids") or ())
        ids_expected += len(expected_ids)
        ids_found += len(expected_ids & set(result.ids))
        for missing in sorted(expected_ids - set(result.ids)):
            mismatches.append(Mismatch(label["file"], "ids", missing, None))
    return Evaluation(len(labels), correct, ids_expected, ids_found, tuple(mismatches))


def explain(result: Classification) -> list[tuple[str, str, str, str]]:
    """Return (field, value, rule, signal) rows: every field's value and the evidence behind it."""
    rows: list[tuple[str, str, str, str]] = []
    evidence: dict[str, list[Evidence]] = {}
    for item in result.evidence:
        evidence.setdefault(item.field, []).append(item)
    fields = ("relevant", "platform", "kind", "reason", "severity", "authenticity", "language", "deadline",
              "marketplace", "ids", "facts", "reason_text")
    for field in fields:
        if field == "ids":
            shown = " ".join(result.ids)
        elif field == "facts":
            shown = "; ".join(f"{name}={value}" for name, value in result.facts)
        else:
            value = field_value(result, field)
            shown = "" if value is None else str(value)
        items = evidence.pop(field, [])
        if not items:
            rows.append((field, _short(shown), "", ""))
            continue
        for index, item in enumerate(items):
            rows.append((field if index == 0 else "", _short(shown) if index == 0 else _short(item.value),
                         item.rule, _short(item.signal)))
    for field, items in evidence.items():  # evidence for fields not listed above
        for item in items:
            rows.append((field, _short(item.value), item.rule, _short(item.signal)))
    return rows


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
