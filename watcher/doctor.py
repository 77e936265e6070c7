"""Setup checks for `watcher doctor`: config, credentials, database, accounts and folders, clock, channels.

Every check returns typed findings and prints nothing; the command line shows them. A check never
changes a mailbox (folders are opened read-only, nothing is appended), never keeps a database write
(it is rolled back) and never reveals a secret: channel URLs are only ever shown as the host and port
of the service they point at.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import socket
import sqlite3
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import apprise

from watcher.config import AccountConfig, ChannelConfig, Config, find_config, load_config
from watcher.errors import AuthenticationFailed, ConfigError, FetchError, SecretError
from watcher.imap import NETWORK_ERRORS, Mailbox
from watcher.notify import send
from watcher.secrets import SecretSource, read_secret
from watcher.store import SCHEMA_VERSION

log = logging.getLogger(__name__)

Status = Literal["ok", "warning", "failed"]

CONNECT_TIMEOUT_SECONDS = 5.0
# How far the local clock may stray from the server's before deadlines, lookback windows and retry
# times start to be visibly wrong.
CLOCK_TOLERANCE = timedelta(minutes=5)
# Attributes where Apprise plugins keep the public endpoint of a cloud service, most specific first.
ENDPOINT_ATTRIBUTES = ("notify_url", "webhook_url", "cloud_notify_url", "api_url")
# A date in a server greeting, as UW-imapd and some others write it: "at Thu, 4 Jan 2024 10:00:00 -0500".
_GREETING_DATE = re.compile(rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), +\d{1,2} \w{3} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}")


@dataclass(frozen=True, slots=True)
class Finding:
    """The outcome of one check: ``subject`` names what was checked; a failed one says how to fix it."""

    subject: str  # "config", "credentials", "database", "account us-store", "clock", "channel ops-slack"
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class ConfigCheck:
    """The loaded config (None when invalid), the file it came from (None when none was found), findings."""

    config: Config | None
    path: Path | None
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class ClockReference:
    """A moment on the server's clock and the local time it was seen at.

    ``exact``: the server stated its current time (a greeting). Otherwise ``server_time`` is a message's
    INTERNALDATE, which only says that the server's clock had reached it by ``seen_at``.
    """

    source: str
    server_time: datetime
    seen_at: datetime
    exact: bool


@dataclass(frozen=True, slots=True)
class AccountCheck:
    finding: Finding
    references: tuple[ClockReference, ...]


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int


def check_config(explicit: str | None) -> ConfigCheck:
    """Find and load the config; return one ok finding (plus its warnings) or one failed finding per problem."""
    try:
        path = find_config(explicit)
    except ConfigError as error:
        return ConfigCheck(None, None, tuple(Finding("config", "failed", problem, "create one from "
                                                     "config/watcher.example.toml, or pass --config PATH")
                                             for problem in error.problems))
    try:
        config = load_config(path)
    except ConfigError as error:
        fix = f"edit {path} (watcher config check lists the same problems)"
        return ConfigCheck(None, path, tuple(Finding("config", "failed", f"{path}: {problem}", fix)
                                             for problem in error.problems))
    summary = (f"{path} is valid: {_count(len(config.accounts), 'account')}, "
               f"{_count(len(config.channels), 'channel')}")
    warnings = tuple(Finding("config", "warning", warning) for warning in config.warnings)
    return ConfigCheck(config, path, (Finding("config", "ok", summary), *warnings))


def check_credentials(path: Path) -> Finding:
    """Check that every systemd credential the config file names (``*_credential``) can be read.

    Works on the raw file, so it also explains a config that is invalid only because of a credential.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return Finding("credentials", "warning", "not checked: the config file cannot be read (see above)")
    named = list(_credential_keys(document))
    if not named:
        return Finding("credentials", "ok", "the config names no *_credential")
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        keys = ", ".join(key for key, _ in named)
        return Finding("credentials", "failed", f"$CREDENTIALS_DIRECTORY is not set, but {keys} name systemd "
                       "credentials", "run under systemd with LoadCredential= or use *_file")
    problems = []
    for key, name in named:
        try:
            read_secret(SecretSource.CREDENTIAL, name)
        except SecretError as error:  # the message names the file, never its content
            problems.append(f"{key} = {name!r}: {error}")
    if problems:
        return Finding("credentials", "failed", "; ".join(problems),
                       f"add LoadCredential=NAME:/etc/watcher/credentials/NAME to the unit for each, "
                       f"with a non-empty file readable by root ($CREDENTIALS_DIRECTORY is {directory})")
    return Finding("credentials", "ok", f"{_count(len(named), 'credential')} readable in {directory}")


def _credential_keys(document: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for table, key in (("accounts", "password_credential"), ("channels", "url_credential")):
        entries = document.get(table)
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict) and isinstance(entry.get(key), str):
                yield f"{table}[{index}].{key}", entry[key]


def check_database(path: Path) -> Finding:
    """Check that the database can be written (a write that is rolled back) and is at SCHEMA_VERSION.

    A database that does not exist yet passes when its folder accepts new files: the first check creates it.
    """
    if not path.exists():
        return _check_creatable(path)
    try:
        connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=CONNECT_TIMEOUT_SECONDS,
                                     isolation_level=None)
    except sqlite3.Error as error:
        return Finding("database", "failed", f"cannot open {path}: {error}", _database_fix(str(error)))
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute("CREATE TABLE watcher_doctor_probe (written INTEGER)")
            connection.execute("INSERT INTO watcher_doctor_probe VALUES (1)")
        finally:
            connection.execute("ROLLBACK")
    except sqlite3.Error as error:
        return Finding("database", "failed", f"cannot write to {path}: {error}", _database_fix(str(error)))
    finally:
        connection.close()
    if version < SCHEMA_VERSION:
        return Finding("database", "failed", f"{path} is at schema version {version}; this watcher uses "
                       f"{SCHEMA_VERSION}", "run `watcher check` once (it migrates the database when it opens it)")
    if version > SCHEMA_VERSION:
        return Finding("database", "failed", f"{path} is at schema version {version}, newer than this "
                       f"watcher ({SCHEMA_VERSION})", "upgrade watcher")
    return Finding("database", "ok", f"{path} is writable, schema version {version} (current)")


def _check_creatable(path: Path) -> Finding:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return Finding("database", "failed", f"{path} does not exist and {folder} does not accept new files "
                       f"({error.__class__.__name__})", "make the folder writable for the watcher's user "
                       "(under systemd: StateDirectory=watcher)")
    return Finding("database", "ok", f"{path} does not exist yet; {folder} is writable, the first check creates it")


def _database_fix(message: str) -> str:
    if "locked" in message:
        return "another process holds the write lock for too long; look for a stuck watcher"
    if "not a database" in message:
        return "storage.database must point at watcher's own SQLite file"
    return "make the file, and the folder it is in, writable for the watcher's user"


def check_account(account: AccountConfig) -> AccountCheck:
    """Log in to ``account``, open each of its folders read-only, and collect clock references.

    A missing folder is named with the folders the server has.
    """
    subject = f"account {account.name}"
    mailbox = Mailbox(account)
    try:
        mailbox.connect()
    except AuthenticationFailed as error:
        return AccountCheck(Finding(subject, "failed", str(error), "check username and password for this "
                                    "account (and that IMAP access is enabled for the mailbox)"), ())
    except FetchError as error:
        return AccountCheck(Finding(subject, "failed", str(error), "check host, port and security, and that "
                                    "this machine may reach the server"), ())
    try:
        references = list(_greeting_reference(mailbox))
        problems = []
        for folder in account.folders:
            try:
                mailbox.select(folder)
            except FetchError as error:
                problems.append(_folder_problem(mailbox, folder, error))
                continue
            references.extend(_newest_message_reference(mailbox, folder))
    except FetchError as error:
        return AccountCheck(Finding(subject, "failed", str(error), "check that the server is healthy, "
                                    "then run watcher doctor again"), ())
    finally:
        mailbox.close()
    if problems:
        return AccountCheck(Finding(subject, "failed", "; ".join(problems),
                                    f"set accounts.folders of {account.name} to folders the server has"),
                            tuple(references))
    folders = ", ".join(account.folders)
    return AccountCheck(Finding(subject, "ok", f"logged in as {account.username} on {account.host}:{account.port}; "
                                f"{'folder' if len(account.folders) == 1 else 'folders'} {folders} found"),
                        tuple(references))


def _folder_problem(mailbox: Mailbox, folder: str, error: FetchError) -> str:
    client = mailbox.client
    try:
        names = sorted(str(name) for _, _, name in client.list_folders()) if client else []
    except NETWORK_ERRORS:
        return str(error)
    if folder in names:
        return str(error)
    return f"folder {folder!r} does not exist; the server has {', '.join(names) or 'no folders'}"


def _greeting_reference(mailbox: Mailbox) -> Iterator[ClockReference]:
    # IMAP ID data is no help here: its "date" field is the server software's release date (RFC 2971).
    client = mailbox.client
    moment = greeting_time(client.welcome if client is not None else b"")
    if moment is not None:
        yield ClockReference(f"{mailbox.account.name} greeting", moment, datetime.now(UTC), exact=True)


def greeting_time(greeting: bytes) -> datetime | None:
    """Return the server time stated in an IMAP greeting, or None when it states none."""
    match = _GREETING_DATE.search(greeting or b"")
    if match is None:
        return None
    try:
        return email.utils.parsedate_to_datetime(match.group().decode("ascii")).astimezone(UTC)
    except (ValueError, TypeError):
        return None


def _newest_message_reference(mailbox: Mailbox, folder: str) -> Iterator[ClockReference]:
    # Messages from the last two days by the server's INTERNALDATE; older ones are no fresh reference anyway.
    uids = mailbox.uids_since(2)
    if not uids:
        return
    for batch in mailbox.headers(uids[-1:]):
        for headers in batch:
            if headers.internal_date is not None:
                internal = headers.internal_date
                # imapclient gives naive local times; astimezone() reads a naive time as local.
                yield ClockReference(f"{mailbox.account.name}/{folder} newest message", internal.astimezone(UTC),
                                     datetime.now(UTC), exact=False)


def check_clock(references: Sequence[ClockReference]) -> Finding:
    """Compare the local clock with the servers' (see ClockReference); no usable reference is a warning."""
    fix = "turn on time synchronisation (timedatectl set-ntp true) or set the clock"
    for reference in references:
        offset = reference.seen_at - reference.server_time
        if reference.exact and abs(offset) > CLOCK_TOLERANCE:
            direction = "ahead of" if offset > timedelta(0) else "behind"
            return Finding("clock", "failed", f"this machine's clock is {_duration(abs(offset))} {direction} "
                           f"the server's ({reference.source})", fix)
        if not reference.exact and -offset > CLOCK_TOLERANCE:
            return Finding("clock", "failed", f"this machine's clock is at least {_duration(-offset)} behind the "
                           f"server's: the {reference.source} was received at "
                           f"{reference.server_time.isoformat(timespec='seconds')}", fix)
    usable = [reference for reference in references if reference.exact or
              reference.seen_at - reference.server_time <= CLOCK_TOLERANCE]
    if usable:
        sources = ", ".join(reference.source for reference in usable)
        return Finding("clock", "ok", f"agrees with the server within {_duration(CLOCK_TOLERANCE)} ({sources})")
    return Finding("clock", "warning", "not compared: no server states its time in its greeting and no message "
                   f"arrived in the last {_duration(CLOCK_TOLERANCE)} (only shows that the clock is not behind)")


def check_channel(channel: ChannelConfig, send_test: bool = False) -> Finding:
    """Check that Apprise can load the channel's URL and that its service accepts a TCP connection.

    Nothing is sent unless ``send_test``; then a real test notification goes out.
    """
    subject = f"channel {channel.name}"
    plugin = apprise.Apprise.instantiate(channel.url.reveal())
    if plugin is None:
        return Finding(subject, "failed", "Apprise cannot load its URL (unknown scheme or bad syntax)",
                       "correct the URL (https://github.com/caronc/apprise/wiki lists every service's form)")
    endpoint = service_endpoint(plugin)
    if endpoint is None:
        reached = "loaded (a local service: nothing to connect to)"
    else:
        problem = _connect(endpoint)
        if problem:
            return Finding(subject, "failed", problem, "check the host and port in the URL, and that this "
                           "machine may reach it (firewall, proxy)")
        reached = f"{endpoint.host}:{endpoint.port} accepts connections"
    if not send_test:
        return Finding(subject, "ok", reached)
    outcome, duration_ms = send(channel, "watcher doctor test notification",
                                f"A test from `watcher doctor` on channel **{channel.name}**. No action needed.")
    if outcome.outcome != "success":
        return Finding(subject, "failed", f"{reached}, but the test notification failed: {outcome.outcome}: "
                       f"{outcome.detail}", "check the tokens and target in the URL")
    return Finding(subject, "ok", f"{reached}; test notification sent in {duration_ms} ms")


def service_endpoint(plugin: Any) -> Endpoint | None:
    """Return where an Apprise plugin connects to, or None for a local service (syslog, D-Bus …).

    A URL whose form names a host (json://host:port, mailtos://…@host) connects there; a cloud service's
    URL holds only tokens (slack://TokenA/…), so its endpoint is the plugin's own service address.
    """
    host = str(getattr(plugin, "host", "") or "")
    if host and any("{host}" in template for template in getattr(plugin, "templates", ())):
        port = getattr(plugin, "port", None)
        return Endpoint(host, int(port) if port else (443 if getattr(plugin, "secure", False) else 80))
    for attribute in ENDPOINT_ATTRIBUTES:
        address = getattr(plugin, attribute, None)
        if isinstance(address, str) and address.startswith(("https://", "http://")):
            parts = urlsplit(address)
            if parts.hostname:
                return Endpoint(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    return None


def _connect(endpoint: Endpoint) -> str:
    """Resolve and open a TCP connection to ``endpoint`` (sending nothing); return the problem or ""."""
    started = time.monotonic()
    try:
        addresses = socket.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        return f"host {endpoint.host} does not resolve ({error})"
    problem = ""
    for family, kind, protocol, _, address in addresses:
        try:
            with socket.socket(family, kind, protocol) as connection:
                connection.settimeout(CONNECT_TIMEOUT_SECONDS)
                connection.connect(address)
        except TimeoutError:
            problem = f"no answer from {endpoint.host}:{endpoint.port} within {CONNECT_TIMEOUT_SECONDS:g} s"
        except OSError as error:
            problem = f"cannot connect to {endpoint.host}:{endpoint.port}: {error.strerror or error}"
        else:
            log.info("connected to %s:%s in %.2fs", endpoint.host, endpoint.port, time.monotonic() - started)
            return ""
    return problem


def diagnose(config: Config, send_test: bool = False) -> Iterator[Finding]:
    """Yield the findings that need a valid config, as each check finishes: database, accounts, clock, channels."""
    yield check_database(config.database)
    references: list[ClockReference] = []
    for account in config.accounts:
        result = check_account(account)
        references.extend(result.references)
        yield result.finding
    yield check_clock(references)
    for channel in config.channels:
        yield check_channel(channel, send_test)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _duration(span: timedelta) -> str:
    seconds = round(span.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{round(seconds / 3600)} h"
