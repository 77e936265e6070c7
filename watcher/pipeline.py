"""One pass of the pipeline: fetch → parse → classify → store for an account (delivery.py sends the rows).

Nothing here prints; results come back as summaries and failures as the project's exceptions.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from watcher import classify, guidance, parse, rules, screen
from watcher.config import AccountConfig, Config
from watcher.errors import FetchError
from watcher.imap import Body, Headers, Mailbox
from watcher.screen import Verdict, header_fields
from watcher.model import Classification, Event, Guidance
from watcher.store import MessageRecord, Store

log = logging.getLogger(__name__)


class Engine:
    """The loaded knowledge: rule set and playbooks. Built once per configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rules = rules.load_rules(config.rule_files)
        self.screen = screen.Screen(self.rules)
        self.playbooks = guidance.load_playbooks(config.guidance_files)

    def classify(self, content: bytes) -> tuple[Classification | None, MessageFacts]:
        """Parse and classify raw message bytes. A message that breaks the parser or classifier gives
        (None, facts with the defect) — it is recorded as malformed and the watcher carries on."""
        try:
            message = parse.parse_message(content)
        except Exception as error:  # the parser promises not to raise; a bug there must not stop the watch
            log.exception("parser failed on a message")
            return None, MessageFacts("", "", None, (f"parse error: {error.__class__.__name__}",))
        facts = MessageFacts(message.subject, _sender(message.from_name, message.from_address), message.date,
                             message.defects, message.message_id)
        try:
            result = classify.classify(message, self.rules, trusted_authserv_ids=self.config.trusted_authserv_ids)
        except Exception as error:
            log.exception("classifier failed on message %s", message.message_id)
            return None, MessageFacts(facts.subject, facts.sender, facts.date,
                                      (*facts.defects, f"classify error: {error.__class__.__name__}"), facts.message_id)
        return result, facts

    def guidance_for(self, event: Event) -> tuple[Guidance, str]:
        """Return the playbook entry for ``event`` and the language to write the notification in."""
        result = event.classification
        wanted = self.config.guidance_language
        language = (result.language or "en") if wanted == "auto" else wanted
        found = self.playbooks.lookup(result.platform, result.kind, result.reason, result.authenticity, language)
        return found, language


@dataclass(frozen=True, slots=True)
class MessageFacts:
    subject: str
    sender: str
    date: datetime | None
    defects: tuple[str, ...]
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class FolderSummary:
    folder: str
    new: int = 0  # messages newer than the cursor
    fetched: int = 0  # full bodies fetched after the header screen
    events: tuple[int, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True)
class AccountSummary:
    account: str
    folders: tuple[FolderSummary, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    failure: FetchError | None = None  # what made the whole account fail (a refused login, an unreachable server)

    @property
    def ok(self) -> bool:
        return self.error is None and all(folder.error is None for folder in self.folders)

    @property
    def events(self) -> tuple[int, ...]:
        return tuple(event for folder in self.folders for event in folder.events)


def check_account(engine: Engine, account: AccountConfig, should_stop: Callable[[], bool] = lambda: False,
                  folder_locks: Mapping[str, threading.Lock] | None = None) -> AccountSummary:
    """Fetch and record everything new in every folder of ``account``. Never raises FetchError:
    a failure is returned in the summary (per folder where the connection survived). ``folder_locks``
    keep this check and a folder's IDLE watch from reading the same folder at once."""
    started = time.monotonic()
    folders: list[FolderSummary] = []
    try:
        with Store(engine.config.database) as store, Mailbox(account) as mailbox:
            for folder in account.folders:
                if should_stop():
                    break
                try:
                    with folder_locks[folder] if folder_locks else contextlib.nullcontext():
                        folders.append(_check_folder(engine, store, mailbox, account, folder, should_stop))
                    store.set_folder_state(account.name, folder, None, checked=True)
                except FetchError as error:
                    log.warning("%s", error)
                    folders.append(FolderSummary(folder, error=str(error)))
                    store.set_folder_state(account.name, folder, "backing_off", error=str(error))
    except FetchError as error:
        log.warning("%s", error)
        return AccountSummary(account.name, tuple(folders), str(error), time.monotonic() - started, error)
    summary = AccountSummary(account.name, tuple(folders), None, time.monotonic() - started)
    log.info("%s: checked %d folders in %.2fs: %d new, %d fetched, %d events", account.name, len(folders),
             summary.seconds, sum(f.new for f in folders), sum(f.fetched for f in folders), len(summary.events))
    return summary


def check_folder(engine: Engine, mailbox: Mailbox, account: AccountConfig, folder: str,
                 should_stop: Callable[[], bool] = lambda: False) -> FolderSummary:
    """Fetch and record what is new in one folder over an open connection; raise FetchError on failure."""
    with Store(engine.config.database) as store:
        summary = _check_folder(engine, store, mailbox, account, folder, should_stop)
        store.set_folder_state(account.name, folder, "idle", checked=True)
    return summary


def _check_folder(engine: Engine, store: Store, mailbox: Mailbox, account: AccountConfig, folder: str,
                  should_stop: Callable[[], bool]) -> FolderSummary:
    state = mailbox.select(folder)
    cursor = store.cursor(account.name, folder)
    if cursor is not None and cursor.uidvalidity == state.uidvalidity:
        uids = mailbox.uids_after(cursor.last_uid)
        last_uid = cursor.last_uid
    else:
        if cursor is not None:
            log.warning("%s/%s: UIDVALIDITY changed (%d → %d); re-scanning the last %d days without duplicating events",
                        account.name, folder, cursor.uidvalidity, state.uidvalidity, account.lookback_days)
        uids = mailbox.uids_since(account.lookback_days) if account.lookback_days else []
        last_uid = 0
    # Every UID below UIDNEXT at SELECT time is covered by the search above, so the cursor may move up to it.
    floor = (state.uidnext - 1) if state.uidnext else 0
    fetched = 0
    events: list[int] = []
    for batch in mailbox.headers(uids):
        if should_stop():
            return FolderSummary(folder, len(uids), fetched, tuple(events))
        records, count = process_batch(engine, store, mailbox, account, batch)
        fetched += count
        last_uid = max([last_uid, *(headers.uid for headers in batch)])
        events += store.record(account.name, account.store, folder, state.uidvalidity, last_uid, records)
    store.record(account.name, account.store, folder, state.uidvalidity, max(last_uid, floor), [])
    return FolderSummary(folder, len(uids), fetched, tuple(events))


def process_batch(engine: Engine, store: Store, mailbox: Mailbox, account: AccountConfig,
                  batch: list[Headers]) -> tuple[list[MessageRecord], int]:
    """Screen one batch of headers, fetch the new candidates in full and classify them.

    Returns the records to store and how many bodies were fetched; nothing is written here, so the caller
    stores the records together with its cursor (the live check) or its progress (a backfill).
    """
    verdicts = {headers.uid: engine.screen.verdict(headers.block) for headers in batch}
    candidates = [headers for headers in batch if verdicts[headers.uid] is not Verdict.SKIP]
    keys = {headers.uid: _message_id(headers.block) for headers in candidates}
    seen = store.processed_keys(key for key in keys.values() if key)
    wanted = [headers for headers in candidates if not keys[headers.uid] or keys[headers.uid] not in seen]
    forwards = [headers.uid for headers in wanted if verdicts[headers.uid] is Verdict.FORWARD]
    if forwards:
        # A forward is fetched in full only when its text parts name a platform; its attachments never are.
        texts = mailbox.texts(forwards)
        wanted = [headers for headers in wanted if verdicts[headers.uid] is Verdict.FETCH
                  or engine.screen.texts_name_a_platform(texts.get(headers.uid, []))]
    bodies = mailbox.bodies([headers.uid for headers in wanted], {headers.uid: headers.size for headers in wanted})
    internal = {headers.uid: headers.internal_date for headers in wanted}
    records = [_record(engine, account, body, keys[body.uid], internal[body.uid]) for body in bodies]
    return records, len(bodies)


def _record(engine: Engine, account: AccountConfig, body: Body, header_id: str | None,
            internal_date: datetime | None) -> MessageRecord:
    result, facts = engine.classify(body.content)
    defects = facts.defects + (("truncated at max_message_bytes",) if body.truncated else ())
    message_id = header_id or facts.message_id or ""
    key = message_id or "sha256:" + hashlib.sha256(body.content).hexdigest()
    channels: tuple[str, ...] = ()
    if result is not None and result.relevant:
        channels = tuple(channel.name for channel in engine.config.channels
                         if channel.wants(result.platform, result.kind, result.severity, account.name, account.store))
    received = facts.date if facts.date is not None else internal_date
    return MessageRecord(key, message_id, body.uid, facts.subject, facts.sender, received, result, defects, channels)


def _message_id(block: bytes) -> str | None:
    return next((value for name, value in header_fields(block) if name == "message-id" and value), None)


def _sender(name: str, address: str) -> str:
    return f"{name} ({address})" if name else address

