"""Throwaway servers on 127.0.0.1 for the tests and ``watcher demo``.

``LocalDovecot`` runs a private Dovecot IMAP instance in a temporary folder, ``Mailbox`` seeds and
inspects one of its users over IMAP, and ``HttpSink`` records the JSON posts Apprise's ``json://``
channel makes. Nothing here touches an address other than 127.0.0.1.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from imapclient import IMAPClient

from watcher.errors import WatcherError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAIL_DOMAIN = "example.test"
# Dovecot's binaries live in sbin, which is not on every user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 15.0
# MULTIAPPEND batch size: large enough to amortise the command, small enough to keep one
# server-side transaction modest.
_APPEND_BATCH = 500
_APPENDUID = re.compile(rb"\[APPENDUID \d+ ([0-9:,]+)\]")


class SandboxError(WatcherError):
    """A sandbox server could not be started, reached or used."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, deadline: float, process: subprocess.Popen[bytes]) -> bool:
    """Return True once 127.0.0.1:``port`` accepts a connection; False at ``deadline`` or when
    ``process`` exits first."""
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _binary(name: str) -> str:
    """Return the path of Dovecot's ``name`` binary; raise SandboxError naming the package."""
    path = shutil.which(name, path=_SEARCH_PATH)
    if path is None:
        raise SandboxError(
            f"the {name!r} binary is not installed; install the Debian package dovecot-imapd "
            "(apt-get install -y dovecot-imapd)"
        )
    return path


def _date_header(content: bytes) -> datetime | None:
    """Return the message's Date header as a datetime, or None when absent or unreadable."""
    value = BytesHeaderParser().parsebytes(content).get("Date")
    if value is None:
        return None
    try:
        return parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None


def _uid_set(text: str) -> list[int]:
    """Expand an IMAP uid-set such as ``1:3,7`` into ``[1, 2, 3, 7]``."""
    uids: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        uids.extend(range(int(first), int(last or first) + 1))
    return uids


def _appended_uids(response: bytes) -> list[int]:
    """Return the UIDs an APPEND response reports (UIDPLUS); raise SandboxError without them."""
    found = _APPENDUID.search(response)
    if found is None:
        raise SandboxError(f"APPEND response lacks APPENDUID: {response!r}")
    return _uid_set(found.group(1).decode("ascii"))


def _multiappend(client: IMAPClient, folder: str, batch: list[dict[str, Any]]) -> list[int]:
    """Send one MULTIAPPEND and return the UIDs it assigned."""
    # multiappend() returns imaplib's (status, lines); the tagged OK line carries APPENDUID.
    _status, lines = client.multiappend(folder, batch)
    return _appended_uids(lines[-1])


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One user of a LocalDovecot, reached over plain IMAP on 127.0.0.1."""

    username: str
    password: str
    host: str
    port: int

    @contextmanager
    def connect(self) -> Iterator[IMAPClient]:
        """Yield a logged-in IMAPClient; log out when the block ends."""
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        try:
            client.login(self.username, self.password)
            yield client
        finally:
            try:
                client.logout()
            except (OSError, IMAPClient.Error):
                client.shutdown()

    def append(
        self, content: bytes, folder: str = "INBOX", internal_date: datetime | None = None
    ) -> int:
        """Append one message to ``folder`` and return its UID.

        The INTERNALDATE is ``internal_date`` or, when None, the message's Date header, so that
        ``SEARCH SINCE`` sees the message as a real mailbox would.
        """
        when = internal_date or _date_header(content)
        with self.connect() as client:
            response = client.append(folder, content, msg_time=when)
        return _appended_uids(response)[0]

    def append_many(self, messages: Iterable[bytes], folder: str = "INBOX") -> list[int]:
        """Append every message to ``folder`` over one connection; return their UIDs in order.

        Messages go in MULTIAPPEND batches (RFC 3502), each dated by its Date header.
        """
        uids: list[int] = []
        with self.connect() as client:
            batch: list[dict[str, Any]] = []
            for content in messages:
                item: dict[str, Any] = {"msg": content}
                when = _date_header(content)
                if when is not None:
                    item["date"] = when
                batch.append(item)
                if len(batch) == _APPEND_BATCH:
                    uids.extend(_multiappend(client, folder, batch))
                    batch = []
            if batch:
                uids.extend(_multiappend(client, folder, batch))
        return uids

    def create_folder(self, name: str) -> None:
        """Create the folder ``name``."""
        with self.connect() as client:
            client.create_folder(name)

    def delete_folder(self, name: str) -> None:
        """Delete the folder ``name`` and the messages in it."""
        with self.connect() as client:
            client.delete_folder(name)

    def flags(self, uid: int, folder: str = "INBOX") -> frozenset[str]:
        """Return the flags of message ``uid`` in ``folder``; raise SandboxError if it is gone.

        The folder is opened read-only (EXAMINE), so looking changes nothing.
        """
        with self.connect() as client:
            client.select_folder(folder, readonly=True)
            fetched = client.fetch([uid], ["FLAGS"])
        if uid not in fetched:
            raise SandboxError(f"{self.username}: no message with UID {uid} in {folder}")
        return frozenset(
            flag.decode() if isinstance(flag, bytes) else str(flag)
            for flag in fetched[uid][b"FLAGS"]
        )


class _Server:
    """A context manager that calls ``start()`` on entry and ``stop()`` on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class LocalDovecot(_Server):
    """A private Dovecot instance listening on 127.0.0.1, living in a temporary folder.

    ``start()`` raises SandboxError when Dovecot is missing or does not come up (with its log).
    With ``tls=True`` it also serves IMAPS on ``tls_port`` with a self-signed certificate at
    ``cert_file`` (valid for 127.0.0.1 and localhost). With ``oauth2_introspection_url`` it also accepts
    XOAUTH2 and OAUTHBEARER logins, asking that URL (RFC 7662 introspection, a POST) whether a token is
    active and whose it is (``username``); PLAIN/LOGIN with the users' passwords keep working.
    """

    def __init__(self, *, tls: bool = False, oauth2_introspection_url: str | None = None) -> None:
        self.tls = tls
        self.oauth2_introspection_url = oauth2_introspection_url
        self.host = HOST
        self.port = 0
        self.tls_port = 0
        self.cert_file: Path | None = None
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._user_count = 0
        self._users_lock = threading.Lock()

    @property
    def _config(self) -> Path:
        assert self._root is not None, "LocalDovecot is not started"
        return self._root / "dovecot.conf"

    @property
    def _passwd_dir(self) -> Path:
        assert self._root is not None, "LocalDovecot is not started"
        return self._root / "passwd"

    def start(self) -> None:
        """Write a configuration, start Dovecot and return once it accepts connections."""
        _binary("dovecot")  # a clear SandboxError now when the package is missing
        _binary("doveadm")
        root = Path(tempfile.mkdtemp(prefix="watcher-dovecot-"))
        self._root = root
        # Dovecot's unprivileged processes must reach the mail and the password file.
        root.chmod(0o755)
        # Dovecot refuses to deliver as root: as root the mail belongs to the dovecot user,
        # otherwise everything runs as the current user.
        account = pwd.getpwnam("dovecot") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        (root / "mail").mkdir()
        os.chown(root / "mail", account.pw_uid, account.pw_gid)
        self._passwd_dir.mkdir(mode=0o755)
        self.port = free_port()
        if self.tls:
            self.tls_port = free_port()
            self.cert_file = self._make_certificate(root)
        if self.oauth2_introspection_url:
            (root / "dovecot-oauth2.conf.ext").write_text(
                "introspection_mode = post\n"
                f"introspection_url = {self.oauth2_introspection_url}\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n"
                "force_introspection = yes\n"
            )
        self._config.write_text(self._render_config(root, account))
        self._launch()

    def _launch(self) -> None:
        """Start the Dovecot master on the written configuration and wait until it accepts connections."""
        dovecot = _binary("dovecot")
        root = self._root
        assert root is not None
        started = time.monotonic()
        with open(root / "master.out", "wb") as output:
            # -F keeps the master in the foreground as our child, so stop() can wait for it.
            self._process = subprocess.Popen(
                [dovecot, "-F", "-c", str(self._config)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = started + _START_TIMEOUT
        ports = [self.port, self.tls_port] if self.tls else [self.port]
        if not all(_wait_for_port(port, deadline, self._process) for port in ports):
            detail = self._log_tail()
            self.stop()
            raise SandboxError(f"Dovecot did not accept connections on {ports}:\n{detail}")
        log.info(
            "dovecot started on %s:%s in %.2fs (root %s)",
            self.host, self.port, time.monotonic() - started, root,
        )

    def pause(self) -> None:
        """Stop the server but keep its mail, users and port, for resume(): a server outage."""
        self._halt()

    def resume(self) -> None:
        """Start the server again after pause(), on the same port with the same mail."""
        self._launch()

    def stop(self) -> None:
        """Stop Dovecot and delete its folder; a no-op when not running."""
        if self._root is None:
            return
        self._halt()
        shutil.rmtree(self._root, ignore_errors=True)
        self._root = None

    def _halt(self) -> None:
        if self._process is not None:
            subprocess.run(
                [_binary("doveadm"), "-c", str(self._config), "stop"],
                capture_output=True, timeout=_STOP_TIMEOUT, check=False,
            )
            try:
                self._process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("dovecot ignored doveadm stop; killing it")
                self._process.kill()
                self._process.wait(timeout=_STOP_TIMEOUT)
            self._process = None

    def add_user(self, name: str | None = None) -> Mailbox:
        """Create a user (``name`` or a fresh unique one) with a random password and return it.

        Each user has its own passwd-file, named after it in the passdb path: Dovecot re-reads a
        shared file at most once a second, so a user added to one would sometimes be refused.
        """
        with self._users_lock:
            self._user_count += 1
            username = name or f"user{self._user_count}-{secrets.token_hex(3)}@{MAIL_DOMAIN}"
        password = secrets.token_urlsafe(12)
        passwd = self._passwd_dir / username
        if "/" in username or username.startswith("."):
            raise SandboxError(f"user name {username!r} cannot name a file")
        if passwd.exists():
            raise SandboxError(f"user {username} already exists")
        passwd.write_text(f"{username}:{{PLAIN}}{password}\n", encoding="utf-8")
        return Mailbox(username=username, password=password, host=self.host, port=self.port)

    def log_text(self) -> str:
        """Return the server's log so far (empty before start)."""
        path = self._root / "dovecot.log" if self._root else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def _log_tail(self, lines: int = 40) -> str:
        """Return the end of Dovecot's log and console output, for error messages."""
        assert self._root is not None
        text = ""
        for name in ("master.out", "dovecot.log"):
            path = self._root / name
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    @staticmethod
    def _make_certificate(root: Path) -> Path:
        """Create a self-signed certificate and key for 127.0.0.1 in ``root``; return the cert."""
        openssl = shutil.which("openssl")
        if openssl is None:
            raise SandboxError("tls=True needs the openssl command (Debian package openssl)")
        cert, key = root / "cert.pem", root / "key.pem"
        subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout", str(key), "-out", str(cert),
            ],
            capture_output=True, check=True, timeout=30,
        )
        return cert

    def _render_config(self, root: Path, account: pwd.struct_passwd) -> str:
        """Return the dovecot.conf text for this instance."""
        if self.tls:
            ssl = f"ssl = yes\nssl_cert = <{root / 'cert.pem'}\nssl_key = <{root / 'key.pem'}"
            imaps_port = self.tls_port
        else:
            ssl, imaps_port = "ssl = no", 0
        internal_users = ""
        if os.geteuid() != 0:
            # Without root, every Dovecot process runs as the current user and group.
            internal_users = (
                f"default_internal_user = {account.pw_name}\n"
                f"default_login_user = {account.pw_name}\n"
                f"default_internal_group = {grp.getgrgid(account.pw_gid).gr_name}\n"
            )
        mechanisms, oauth2_passdb, password_mechanisms = "plain login", "", ""
        if self.oauth2_introspection_url:
            # Tokens go to the oauth2 passdb only, passwords to the passwd-file only.
            mechanisms += " xoauth2 oauthbearer"
            oauth2_passdb = (f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                             f"  args = {root / 'dovecot-oauth2.conf.ext'}\n}}\n")
            password_mechanisms = "  mechanisms = plain login\n"

        return f"""\
base_dir = {root / 'run'}
state_dir = {root / 'state'}
instance_name = watcher-sandbox-{self.port}
log_path = {root / 'dovecot.log'}
protocols = imap
listen = {HOST}
{ssl}
{internal_users}disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
first_valid_uid = {min(account.pw_uid, 100)}
mail_location = maildir:{root / 'mail'}/%u
# A test server: losing mail on power failure does not matter, speed does.
mail_fsync = never
# Log the IMAP ID a client sends, so tests can see that the watcher identifies itself.
imap_id_log = name version
{oauth2_passdb}passdb {{
  driver = passwd-file
{password_mechanisms}  args = scheme=PLAIN username_format=%u {self._passwd_dir}/%u
}}
userdb {{
  driver = static
  args = uid={account.pw_uid} gid={account.pw_gid} home={root / 'mail'}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {imaps_port}
  }}
}}
service anvil {{
  chroot =
}}
"""


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One POST an HttpSink received; ``body`` is the parsed JSON, or None if it was not JSON."""

    path: str
    headers: Mapping[str, str]
    body: Any
    raw: bytes
    arrived: float


class HttpSink(_Server):
    """An HTTP server on 127.0.0.1 that records every POST and answers ``status_code``."""

    def __init__(self) -> None:
        self.status_code = 200
        self.requests: list[ReceivedRequest] = []
        self._arrivals = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.host = HOST
        self.port = 0

    def url(self, path: str = "/notify") -> str:
        """Return the Apprise ``json://`` URL that posts to ``path`` on this sink."""
        return f"json://{self.host}:{self.port}/{path.lstrip('/')}"

    def start(self) -> None:
        """Start serving on a free port in a daemon thread."""
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
                length = int(self.headers.get("Content-Length") or 0)
                sink._record(self.path, dict(self.headers.items()), self.rfile.read(length))
                self.send_response(sink.status_code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("http sink: " + format, *args)

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"http-sink-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; a no-op when not running."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Return the requests once at least ``count`` arrived; raise SandboxError at ``timeout``."""
        with self._arrivals:
            if not self._arrivals.wait_for(lambda: len(self.requests) >= count, timeout):
                raise SandboxError(
                    f"HTTP sink got {len(self.requests)} of {count} requests in {timeout}s"
                )
            return list(self.requests)

    def _record(self, path: str, headers: dict[str, str], raw: bytes) -> None:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = ReceivedRequest(path, headers, body, raw, time.monotonic())
        with self._arrivals:
            self.requests.append(request)
            self._arrivals.notify_all()
