"""Fetch stage: read new messages from an IMAP folder without ever changing the mailbox.

Only BODY.PEEK is used (no \\Seen flag, no moves, no deletes). Headers come first, in batches; full bodies
only for the messages the header screen cannot rule out, each capped at the account's size limit.
"""

from __future__ import annotations

import base64
import binascii
import logging
import quopri
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.response_types import BodyData

from watcher import __version__, oauth
from watcher.config import AccountConfig
from watcher.errors import AuthenticationFailed, FetchError

log = logging.getLogger(__name__)

HEADER_FIELDS = b"FROM SENDER REPLY-TO SUBJECT TO MESSAGE-ID DATE"
HEADER_ITEM = b"BODY.PEEK[HEADER.FIELDS (" + HEADER_FIELDS + b")]"
BATCH_SIZE = 500
TEXT_SECTION_BYTES = 400_000  # of each text part read to decide whether a forward names a platform

# Everything the network or the server can throw at us while we talk IMAP.
NETWORK_ERRORS = (IMAPClientError, OSError, socket.timeout, ssl.SSLError, EOFError)


@dataclass(frozen=True, slots=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None


@dataclass(frozen=True, slots=True)
class Headers:
    uid: int
    block: bytes  # the raw header lines asked for in HEADER_FIELDS
    size: int
    internal_date: datetime | None


@dataclass(frozen=True, slots=True)
class TextSection:
    """A part of a message that a reader sees as text: its IMAP section and how to decode it."""

    section: str  # e.g. "1", "2.1", "2.HEADER"
    encoding: str  # content-transfer-encoding, lower-case
    charset: str


@dataclass(frozen=True, slots=True)
class Body:
    uid: int
    content: bytes
    truncated: bool


class Mailbox:
    """One logged-in IMAP connection for one account. Use as a context manager."""

    def __init__(self, account: AccountConfig) -> None:
        self.account = account
        self.client: imapclient.IMAPClient | None = None

    def __enter__(self) -> Mailbox:
        self.connect()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def connect(self) -> None:
        """Connect, secure, identify and log in. Raise FetchError saying which step failed."""
        account = self.account
        started = time.monotonic()
        context = ssl.create_default_context(cafile=str(account.ca_file) if account.ca_file else None)
        timeout = imapclient.SocketTimeout(connect=min(15.0, account.timeout_seconds), read=account.timeout_seconds)
        step = "connect"
        try:
            client = imapclient.IMAPClient(account.host, port=account.port, ssl=account.security == "ssl",
                                           ssl_context=context, timeout=timeout, use_uid=True)
            self.client = client
            if account.security == "starttls":
                step = "STARTTLS"
                client.starttls(context)
            capabilities = client.capabilities()
            if b"ID" in capabilities:
                # Some providers (163.com, 126.com) refuse SELECT from clients that do not identify themselves.
                step = "ID"
                client.id_({"name": "watcher", "version": __version__})
            step = "login"
            self._login(client, capabilities)
        except LoginError as error:
            self.close()
            raise AuthenticationFailed(f"{account.name}: login refused for {account.username}: {_server_text(error)}") from None
        except FetchError:  # no usable OAuth2 token
            self.close()
            raise
        except ssl.SSLCertVerificationError as error:
            self.close()
            raise FetchError(f"{account.name}: TLS certificate of {account.host} not trusted ({error.verify_message}); "
                             "set ca_file for a private CA") from None
        except NETWORK_ERRORS as error:
            self.close()
            raise FetchError(f"{account.name}: {step} to {account.host}:{account.port} failed: {_describe(error)}") from None
        log.info("%s: logged in to %s:%s in %.2fs", account.name, account.host, account.port, time.monotonic() - started)

    def _login(self, client: imapclient.IMAPClient, capabilities: Sequence[bytes]) -> None:
        """Log in with the password, or with the OAuth2 access token (XOAUTH2, or OAUTHBEARER when the server
        offers only that). A refused token is refreshed once and tried again: it may have been revoked or
        expired early. Raise LoginError when the server refuses."""
        account = self.account
        if account.oauth is None:
            client.login(account.username, account.password.reveal())
            return
        def authenticate(token: str) -> None:
            if b"AUTH=XOAUTH2" not in capabilities and b"AUTH=OAUTHBEARER" in capabilities:
                client.oauthbearer_login(account.username, token)
            else:
                client.oauth2_login(account.username, token)

        try:
            authenticate(oauth.access_token(account).reveal())
        except LoginError as error:
            log.info("%s: the server refused the access token (%s); refreshing it and trying once more",
                     account.name, _server_text(error))
            authenticate(oauth.access_token(account, force_refresh=True).reveal())

    def supports_idle(self) -> bool:
        """Return True when the server offers IMAP IDLE (RFC 2177)."""
        try:
            return b"IDLE" in self._client().capabilities()
        except NETWORK_ERRORS as error:
            raise FetchError(f"{self.account.name}: CAPABILITY failed: {_describe(error)}") from None

    def close(self) -> None:
        if self.client is None:
            return
        try:
            self.client.logout()
        except NETWORK_ERRORS:
            try:
                self.client.shutdown()
            except NETWORK_ERRORS:
                pass
        self.client = None

    def _client(self) -> imapclient.IMAPClient:
        if self.client is None:
            raise FetchError(f"{self.account.name}: not connected")
        return self.client

    def select(self, folder: str) -> FolderState:
        """Open ``folder`` read-only and return its UIDVALIDITY and UIDNEXT."""
        try:
            response = self._client().select_folder(folder, readonly=True)
        except NETWORK_ERRORS as error:
            raise FetchError(f"{self.account.name}: cannot open folder {folder!r}: {_describe(error)}") from None
        uidnext = response.get(b"UIDNEXT")
        return FolderState(int(response[b"UIDVALIDITY"]), int(uidnext) if uidnext is not None else None)

    def uids_after(self, last_uid: int) -> list[int]:
        """Return the UIDs greater than ``last_uid`` in the selected folder, ascending."""
        found = self._search(["UID", f"{last_uid + 1}:*"])
        # "N:*" always matches the highest message, even when its UID is below N.
        return sorted(uid for uid in found if uid > last_uid)

    def uids_since(self, days: int) -> list[int]:
        """Return the UIDs of messages received in the last ``days`` days (by INTERNALDATE), ascending."""
        since: date = datetime.now(UTC).date() - timedelta(days=days)
        return sorted(self._search(["SINCE", since]))

    def _search(self, criteria: list[object]) -> list[int]:
        try:
            return [int(uid) for uid in self._client().search(criteria)]
        except NETWORK_ERRORS as error:
            raise FetchError(f"{self.account.name}: search failed: {_describe(error)}") from None

    def headers(self, uids: Sequence[int]) -> Iterator[list[Headers]]:
        """Yield the screening headers of ``uids`` in batches of BATCH_SIZE."""
        for start in range(0, len(uids), BATCH_SIZE):
            chunk = list(uids[start:start + BATCH_SIZE])
            response = self._fetch(chunk, [HEADER_ITEM, b"RFC822.SIZE", b"INTERNALDATE"])
            batch = []
            for uid in chunk:
                data = response.get(uid)
                if data is None:  # expunged since the search
                    continue
                block = next((value for key, value in data.items() if key.startswith(b"BODY[HEADER")), b"")
                internal = data.get(b"INTERNALDATE")
                size = data.get(b"RFC822.SIZE")
                batch.append(Headers(uid, block if isinstance(block, bytes) else b"",
                                     size if isinstance(size, int) else 0,
                                     internal if isinstance(internal, datetime) else None))
            yield batch

    def bodies(self, uids: Sequence[int], sizes: dict[int, int]) -> list[Body]:
        """Fetch whole messages, each cut at the account's max_message_bytes."""
        if not uids:
            return []
        limit = self.account.max_message_bytes
        response = self._fetch(list(uids), [f"BODY.PEEK[]<0.{limit}>".encode()])
        result = []
        for uid in uids:
            data = response.get(uid)
            if data is None:
                continue
            content = next((value for key, value in data.items() if key.startswith(b"BODY[")), b"")
            result.append(Body(uid, content if isinstance(content, bytes) else b"", sizes.get(uid, 0) > limit))
        return result

    def texts(self, uids: Sequence[int]) -> dict[int, list[str]]:
        """Return the decoded text parts (forwarded messages' headers and text included) of each message,
        without fetching its attachments: the server's BODYSTRUCTURE says which sections are text."""
        structures = self._fetch(list(uids), [b"BODYSTRUCTURE"])
        wanted: dict[tuple[TextSection, ...], list[int]] = {}
        for uid in uids:
            structure = structures.get(uid, {}).get(b"BODYSTRUCTURE")
            if isinstance(structure, BodyData):
                sections = tuple(text_sections(structure))
                wanted.setdefault(sections, []).append(uid)
        result: dict[int, list[str]] = {uid: [] for uid in uids}
        for sections, group in wanted.items():
            if not sections:
                continue
            items = [f"BODY.PEEK[{part.section}]<0.{TEXT_SECTION_BYTES}>".encode() for part in sections]
            response = self._fetch(group, items)
            for uid in group:
                data = response.get(uid, {})
                for part in sections:
                    content = next((value for key, value in data.items()
                                    if key.startswith(f"BODY[{part.section}]".encode())), b"")
                    result[uid].append(_decode(content if isinstance(content, bytes) else b"", part))
        return result

    def _fetch(self, uids: list[int], items: list[bytes]) -> dict[int, dict[bytes, object]]:
        started = time.monotonic()
        try:
            response = self._client().fetch(uids, items)
        except NETWORK_ERRORS as error:
            raise FetchError(f"{self.account.name}: fetch failed: {_describe(error)}") from None
        log.debug("%s: fetched %d messages (%s) in %.2fs", self.account.name, len(uids),
                  items[0][:20].decode(), time.monotonic() - started)
        return dict(response)


def text_sections(body: BodyData, section: str = "") -> Iterator[TextSection]:
    """Yield the text sections of ``body``, whose own IMAP section is ``section`` ("" = the message).

    Multipart children are numbered section.1, section.2 …; a forwarded message/rfc822 part contributes
    its header (section.HEADER) and its own text parts.
    """
    if body.is_multipart:
        for number, part in enumerate(body[0], 1):
            yield from text_sections(part, f"{section}.{number}" if section else str(number))
        return
    here = section or "1"
    maintype, subtype = (_text(value).lower() for value in body[:2])
    if maintype == "text":
        parameters = body[2] if isinstance(body[2], tuple) else ()
        names = [_text(value).lower() for value in parameters[::2]]
        charset = _text(parameters[2 * names.index("charset") + 1]) if "charset" in names else "us-ascii"
        yield TextSection(here, _text(body[5]).lower(), charset)
    elif (maintype, subtype) == ("message", "rfc822") and len(body) > 8 and isinstance(body[8], tuple):
        yield TextSection(f"{here}.HEADER", "7bit", "utf-8")
        inner = BodyData.create(body[8])
        yield from text_sections(inner, here if inner.is_multipart else f"{here}.1")


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


def _decode(content: bytes, part: TextSection) -> str:
    """Undo the transfer encoding and charset of one fetched section (best effort, never raises)."""
    try:
        if part.encoding == "base64":
            usable = len(content.replace(b"\r", b"").replace(b"\n", b"")) // 4 * 4
            content = base64.b64decode(b"".join(content.split())[:usable])
        elif part.encoding == "quoted-printable":
            content = quopri.decodestring(content)
    except (ValueError, binascii.Error):
        pass  # searched as it is
    try:
        return content.decode(part.charset, errors="replace")
    except LookupError:  # a charset Python does not know
        return content.decode("utf-8", errors="replace")


def _server_text(error: Exception) -> str:
    text = str(error)
    return text.removeprefix("b'").removesuffix("'") or error.__class__.__name__


def _describe(error: BaseException) -> str:
    if isinstance(error, socket.timeout):
        return "timed out"
    return f"{error.__class__.__name__}: {error}" if str(error) else error.__class__.__name__
