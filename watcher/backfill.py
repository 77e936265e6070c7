"""Past mail: a resumable backfill of IMAP folders since a date, and imports of mbox files and Maildir folders.

Both run every message through the live pipeline's header screen, classification and message keys, so a
message the live watcher already recorded (same Message-ID, else the same bytes) is never recorded twice.
Neither moves the live cursor: each batch is stored in one transaction that puts the folder's cursor row
back as it was. A backfill keeps its place per (account, folder, since) in ``backfill_progress``, written
in the same transaction as the batch, so an interrupted backfill continues after the last stored batch.
(The table holds no UIDVALIDITY: should a folder's change between two runs, the rerun skips the UIDs up to
the stored one; starting over with another ``since`` date scans the folder again.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import mailbox as mailboxes
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from watcher.config import AccountConfig
from watcher.errors import FetchError
from watcher.imap import Mailbox
from watcher.pipeline import Engine, process_batch
from watcher.screen import Verdict, header_fields
from watcher.store import MessageRecord, Store, iso, now_utc

log = logging.getLogger(__name__)

BATCH_SIZE = 200  # messages per fetch and per transaction
IMPORT_UIDVALIDITY = 0  # imported messages have no IMAP folder; their uid is their position in the file


class Progress(Protocol):
    """Where a scan reports how far it got: one ``start`` per folder or file, ``advance`` per batch."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    """A Progress that shows nothing."""

    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What one backfill of a folder, or one import, did in this run."""

    account: str
    folder: str
    scanned: int  # messages looked at in this run
    recorded: int  # messages classified and stored (the rest were screened out or already processed)
    events: tuple[int, ...]
    finished: bool  # False when stopped before the end; a rerun continues
    previously_scanned: int = 0  # by earlier, interrupted runs of the same backfill


def backfill_account(engine: Engine, account: AccountConfig, since: date, *, notify: bool = True,
                     progress: Progress | None = None, batch_size: int = BATCH_SIZE,
                     should_stop: Callable[[], bool] = lambda: False) -> list[ScanResult]:
    """Scan every folder of ``account`` for messages received on or after ``since`` (by INTERNALDATE).

    ``notify=False`` records events without deliveries. ``should_stop`` is asked before each batch; when
    it says yes, the folders not finished are reported with finished=False. Raise FetchError when the
    account cannot be read, StoreError when the database cannot be opened.
    """
    results: list[ScanResult] = []
    with Store(engine.config.database) as store, Mailbox(account) as mailbox:
        for folder in account.folders:
            results.append(_backfill_folder(engine, store, mailbox, account, folder, since, notify,
                                            progress or NoProgress(), batch_size, should_stop))
    return results


def _backfill_folder(engine: Engine, store: Store, mailbox: Mailbox, account: AccountConfig, folder: str,
                     since: date, notify: bool, progress: Progress, batch_size: int,
                     should_stop: Callable[[], bool]) -> ScanResult:
    state = mailbox.select(folder)
    last_uid, scanned_before = _progress_of(store, account.name, folder, since)
    # SEARCH SINCE takes a whole day; uids_since counts days back from today (UTC).
    days = max(0, (datetime.now(UTC).date() - since).days)
    uids = [uid for uid in mailbox.uids_since(days) if uid > last_uid]
    log.info("%s/%s: backfill since %s: %d messages to scan (%d scanned before)", account.name, folder,
             since.isoformat(), len(uids), scanned_before)
    scanned = recorded = 0
    events: list[int] = []
    progress.start(f"{account.name}/{folder}", len(uids))
    try:
        for start in range(0, len(uids), batch_size):
            if should_stop():
                return ScanResult(account.name, folder, scanned, recorded, tuple(events), False, scanned_before)
            chunk = uids[start:start + batch_size]
            records: list[MessageRecord] = []
            for batch in mailbox.headers(chunk):
                found, _ = process_batch(engine, store, mailbox, account, batch)
                records += found if notify else [dataclasses.replace(item, channels=()) for item in found]
            records = _unseen(store, records)
            with _keeping_cursor(store, account.name, folder):
                events += store.record(account.name, account.store, folder, state.uidvalidity, chunk[-1], records)
                _save_progress(store, account.name, folder, since, chunk[-1], scanned_before + scanned + len(chunk))
            scanned += len(chunk)
            recorded += len(records)
            progress.advance(len(chunk))
        if not uids:  # remember that this folder was looked at, even with nothing to scan
            with _keeping_cursor(store, account.name, folder):
                _save_progress(store, account.name, folder, since, last_uid, scanned_before)
    finally:
        progress.finish()
    return ScanResult(account.name, folder, scanned, recorded, tuple(events), True, scanned_before)


def import_messages(engine: Engine, path: Path, account: str = "import", *, store_name: str | None = None,
                    notify: bool = False, progress: Progress | None = None,
                    batch_size: int = BATCH_SIZE) -> ScanResult:
    """Record every message of the mbox file or Maildir folder at ``path`` as the live pipeline would.

    Events are stored under ``account`` (store ``store_name``, default the account) and folder = the
    file or folder name, without deliveries unless ``notify``. A message that cannot be read or parsed
    is recorded as malformed and the import carries on. Raise FetchError when ``path`` is neither an
    mbox file nor a Maildir folder.
    """
    source = _open_source(path)
    folder = path.name
    progress = progress or NoProgress()
    scanned = recorded = 0
    events: list[int] = []
    with Store(engine.config.database) as store:
        keys = list(source.keys())
        if isinstance(source, mailboxes.Maildir):
            keys.sort()  # file names start with the delivery time: oldest first
        progress.start(folder, len(keys))
        try:
            for start in range(0, len(keys), batch_size):
                chunk = list(enumerate(keys[start:start + batch_size], start + 1))
                records = _unseen(store, _import_batch(engine, store, source, chunk, account, folder, notify))
                with _keeping_cursor(store, account, folder):
                    events += store.record(account, store_name or account, folder, IMPORT_UIDVALIDITY,
                                           chunk[-1][0], records)
                scanned += len(chunk)
                recorded += len(records)
                progress.advance(len(chunk))
        finally:
            progress.finish()
            source.close()
    log.info("imported %s as %s/%s: %d messages, %d recorded, %d events", path, account, folder, scanned,
             recorded, len(events))
    return ScanResult(account, folder, scanned, recorded, tuple(events), True)


def _open_source(path: Path) -> mailboxes.Mailbox[mailboxes.Message]:
    if path.is_dir():
        if not ((path / "cur").is_dir() and (path / "new").is_dir()):
            raise FetchError(f"{path}: not a Maildir folder (it has no cur/ and new/)")
        return mailboxes.Maildir(path, factory=None, create=False)
    try:
        with path.open("rb") as file:
            start = file.read(5)
    except OSError as error:
        raise FetchError(f"{path}: cannot read: {error.strerror or error}") from None
    if start and start != b"From ":
        raise FetchError(f"{path}: not an mbox file (it does not start with a 'From ' line)")
    return mailboxes.mbox(path, create=False)


def _import_batch(engine: Engine, store: Store, source: mailboxes.Mailbox[mailboxes.Message],
                  chunk: Sequence[tuple[int, str]], account: str, folder: str,
                  notify: bool) -> list[MessageRecord]:
    """Screen, de-duplicate and classify one batch of a file's messages, as the live pipeline does."""
    contents: dict[int, bytes] = {}
    records: list[MessageRecord] = []
    for number, key in chunk:
        try:
            contents[number] = _crlf(source.get_bytes(key))
        except (OSError, ValueError, KeyError) as error:
            log.warning("%s: message %s cannot be read: %s", folder, key, error)
            records.append(MessageRecord(f"unreadable:{account}:{folder}:{key}", "", number, "", "", None, None,
                                         (f"read error: {error.__class__.__name__}",), ()))
    header_ids: dict[int, str | None] = {}
    for number, content in contents.items():
        block = content.split(b"\r\n\r\n", 1)[0]
        if engine.screen.verdict(block) is not Verdict.SKIP:
            header_ids[number] = next((value for name, value in header_fields(block)
                                       if name == "message-id" and value), None)
    seen = store.processed_keys(key for key in header_ids.values() if key)
    for number, header_id in header_ids.items():
        if header_id and header_id in seen:
            continue
        records.append(_classified(engine, contents[number], number, header_id, account, notify))
    return records


def _classified(engine: Engine, content: bytes, number: int, header_id: str | None, account: str,
                notify: bool) -> MessageRecord:
    result, facts = engine.classify(content)
    message_id = header_id or facts.message_id or ""
    key = message_id or "sha256:" + hashlib.sha256(content).hexdigest()
    channels: tuple[str, ...] = ()
    if notify and result is not None and result.relevant:
        channels = tuple(channel.name for channel in engine.config.channels
                         if channel.wants(result.platform, result.kind, result.severity, account,
                                          next((a.store for a in engine.config.accounts if a.name == account), account)))
    return MessageRecord(key, message_id, number, facts.subject, facts.sender, facts.date, result, facts.defects,
                         channels)


def _unseen(store: Store, records: list[MessageRecord]) -> list[MessageRecord]:
    """Return the records whose message key is not processed yet, each key once: Store.record would skip
    the others anyway, but the summary should count only what is new (e.g. a message without a
    Message-ID the live watcher already stored under the hash of its bytes)."""
    seen = store.processed_keys(item.message_key for item in records)
    unseen: dict[str, MessageRecord] = {}
    for item in records:
        if item.message_key not in seen:
            unseen.setdefault(item.message_key, item)
    return list(unseen.values())


def _crlf(content: bytes) -> bytes:
    """Return ``content`` with CRLF line ends, as IMAP serves it, so a message without a Message-ID gets the
    same sha256 key from a file as from the server."""
    return content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@contextlib.contextmanager
def _keeping_cursor(store: Store, account: str, folder: str) -> Iterator[None]:
    """One write transaction in which Store.record may touch (account, folder)'s cursor: on leaving,
    the cursor row is put back exactly as it was (or removed if there was none)."""
    connection = store.db.conn
    connection.execute("BEGIN IMMEDIATE")  # the write lock first: the live watcher cannot move it meanwhile
    try:
        saved = connection.execute("SELECT uidvalidity, last_uid, checked_at FROM cursors "
                                   "WHERE account = ? AND folder = ?", [account, folder]).fetchone()
        yield
        if saved is None:
            connection.execute("DELETE FROM cursors WHERE account = ? AND folder = ?", [account, folder])
        else:
            connection.execute("UPDATE cursors SET uidvalidity = ?, last_uid = ?, checked_at = ? "
                               "WHERE account = ? AND folder = ?", [*saved, account, folder])
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _progress_of(store: Store, account: str, folder: str, since: date) -> tuple[int, int]:
    row = store.db.execute("SELECT last_uid, scanned FROM backfill_progress WHERE account = ? AND folder = ? "
                           "AND since = ?", [account, folder, since.isoformat()]).fetchone()
    return (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)


def _save_progress(store: Store, account: str, folder: str, since: date, last_uid: int, scanned: int) -> None:
    store.db.execute(
        "INSERT INTO backfill_progress (account, folder, since, last_uid, scanned, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, folder, since) DO UPDATE SET "
        "last_uid = excluded.last_uid, scanned = excluded.scanned, updated_at = excluded.updated_at",
        [account, folder, since.isoformat(), last_uid, scanned, iso(now_utc())])
