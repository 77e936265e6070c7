"""How results are printed: aligned tables, JSON, JSON lines and CSV."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

from tabulate import tabulate

from watcher.model import Classification, Event, Guidance

if TYPE_CHECKING:
    from watcher.query import StoredEvent


def events_table(found: list[Event]) -> str:
    """Return ``found`` as an aligned table (or "no events")."""
    if not found:
        return "no events"
    rows = [[e.id, e.detected_at.strftime("%Y-%m-%d %H:%M"), e.store, e.classification.platform,
             e.classification.kind, e.classification.reason, e.classification.severity,
             e.classification.authenticity, e.classification.deadline or "", e.status] for e in found]
    return str(tabulate(rows, headers=["id", "detected (UTC)", "store", "platform", "kind", "reason", "severity",
                                       "authenticity", "deadline", "status"]))


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


def stored_event_json(found: StoredEvent) -> dict[str, Any]:
    """Every stored field of an event: ``event_json`` plus the event it follows up (``linked_event_id``)."""
    return {**event_json(found.event), "linked_event_id": found.linked_event_id}


FORMATS = ("table", "json", "jsonl", "csv")


def _cell(value: Any) -> str:
    """A value as one table or CSV cell: None is empty, lists and objects are JSON."""
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def emit(rows: Iterable[Mapping[str, Any]], fmt: str, columns: Sequence[str] | None = None, *,
         table_columns: Sequence[str] | None = None, empty: str = "nothing to show", out: TextIO | None = None) -> int:
    """Write ``rows`` to ``out`` (default stdout) as ``fmt`` — one of FORMATS — and return how many there were.

    ``table`` and ``csv`` show ``columns`` in that order (``table_columns`` instead, if given, for the table;
    default: the first row's keys); a table of no rows prints ``empty``. ``json`` (one array) and ``jsonl``
    (one object a line) print every key of every row. ``jsonl``, ``csv`` and ``json`` write each row as it
    comes, so a generator of rows is streamed, never held in memory; ``table`` needs them all to align them.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    stream = out if out is not None else sys.stdout
    count = 0
    if fmt == "table":
        held = list(rows)
        if not held:
            stream.write(empty + "\n")
            stream.flush()
            return 0
        shown = list(table_columns or columns or held[0].keys())
        stream.write(str(tabulate([[_cell(row.get(column)) for column in shown] for row in held], headers=shown))
                     + "\n")
        stream.flush()
        return len(held)
    if fmt == "csv":
        writer: csv.DictWriter[str] | None = None
        for row in rows:
            if writer is None:
                writer = csv.DictWriter(stream, fieldnames=list(columns or row.keys()), extrasaction="ignore",
                                        lineterminator="\n")
                writer.writeheader()
            writer.writerow({key: _cell(value) for key, value in row.items()})
            count += 1
        if writer is None and columns:
            csv.writer(stream, lineterminator="\n").writerow(columns)
        stream.flush()
        return count
    if fmt == "jsonl":
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        stream.flush()
        return count
    stream.write("[")
    for row in rows:
        stream.write(("," if count else "") + "\n  " + json.dumps(row, ensure_ascii=False))
        count += 1
    stream.write("\n]\n" if count else "]\n")
    stream.flush()
    return count
