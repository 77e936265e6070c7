"""OAuth2 mailboxes: a real Dovecot whose oauth2 passdb asks a token server run by the test (127.0.0.1)
whether a token is active; `watcher auth` signs in, `watcher check` logs in with XOAUTH2 and refreshes."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from conftest import running_dovecot
from helpers import run

from watcher.config import OAuthConfig, load_config
from watcher.errors import ConfigError, OAuthError
from watcher.oauth import Token, load_token, save_token
from watcher.oauth_flows import DeviceAuthorization, browser_sign_in, poll_device_token
from watcher.sandbox import LocalDovecot, Mailbox
from watcher.secrets import Secret

REPO = Path(__file__).resolve().parent.parent
NOTICE = REPO / "watcher" / "demo" / "01-deactivated.eml"
CLIENT_ID = "watcher-test-client"
CLIENT_SECRET = "test-client-secret"


@dataclass
class TokenServer:
    """The provider: device-authorization, authorize, token and introspection endpoints on 127.0.0.1."""

    user: str = ""  # whose tokens this server issues
    pending_polls: int = 1  # device flow: answer authorization_pending this many times first
    slow_downs: int = 0  # then slow_down this many times
    access_tokens: set[str] = field(default_factory=set)
    refresh_tokens: set[str] = field(default_factory=set)
    grants: list[str] = field(default_factory=list)  # grant_type of every token request, in order
    introspected: list[str] = field(default_factory=list)  # every token Dovecot asked about
    codes: dict[str, str] = field(default_factory=dict)  # authorization code → PKCE challenge
    polls: int = 0
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def issue(self) -> dict[str, Any]:
        access, refresh = "at-" + secrets.token_urlsafe(12), "rt-" + secrets.token_urlsafe(12)
        self.access_tokens.add(access)
        self.refresh_tokens.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "token_type": "Bearer", "expires_in": 3600}

    def answer(self, path: str, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if path == "/introspect":
            self.introspected.append(fields.get("token", ""))
            return 200, {"active": fields.get("token") in self.access_tokens, "username": self.user}
        if path == "/device":
            assert fields == {"client_id": CLIENT_ID, "scope": "mail"}
            return 200, {"device_code": "dc-1", "user_code": "WDJB-MJHT", "verification_uri": self.url("/activate"),
                         "expires_in": 600, "interval": 1}
        if fields.get("client_id") != CLIENT_ID or fields.get("client_secret") != CLIENT_SECRET:
            return 401, {"error": "invalid_client"}
        grant = fields.get("grant_type", "")
        self.grants.append(grant)
        if grant == "refresh_token":
            if fields.get("refresh_token") not in self.refresh_tokens:
                return 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
            issued = self.issue()
            del issued["refresh_token"]  # like Google: the refresh token stays the same
            return 200, issued
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            self.polls += 1
            if self.polls <= self.pending_polls:
                return 400, {"error": "authorization_pending"}
            if self.polls <= self.pending_polls + self.slow_downs:
                return 400, {"error": "slow_down"}
            return 200, self.issue()
        if grant == "authorization_code":
            challenge = self.codes.pop(fields.get("code", ""), None)
            verifier = fields.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if challenge is None or digest != challenge:
                return 400, {"error": "invalid_grant"}
            return 200, self.issue()
        return 400, {"error": "unsupported_grant_type"}

    def authorize(self, query: dict[str, str]) -> str:
        """The sign-in page: the person agrees at once; return where the browser is sent back to."""
        code = secrets.token_urlsafe(8)
        self.codes[code] = query["code_challenge"]
        return query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenServer]:
    server_state = TokenServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            fields = {key: values[0] for key, values in parse_qs(body).items()}
            status, data = server_state.answer(self.path, fields)
            content = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def do_GET(self) -> None:  # noqa: N802
            parts = urlsplit(self.path)
            query = {key: values[0] for key, values in parse_qs(parts.query).items()}
            self.send_response(302)
            self.send_header("Location", server_state.authorize(query))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server_state
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def oauth_dovecot(token_server: TokenServer) -> Iterator[LocalDovecot]:
    with running_dovecot(oauth2_introspection_url=token_server.url("/introspect")) as server:
        yield server


@pytest.fixture
def oauth_mailbox(oauth_dovecot: LocalDovecot, token_server: TokenServer) -> Mailbox:
    """A fresh user whose tokens the token server issues, with one deactivation notice in INBOX."""
    mailbox = oauth_dovecot.add_user()
    token_server.user = mailbox.username
    token_server.grants.clear()
    token_server.introspected.clear()
    token_server.polls = 0
    mailbox.append(NOTICE.read_bytes())
    return mailbox


def write_oauth_config(folder: Path, mailbox: Mailbox, server: TokenServer) -> Path:
    (folder / "client-secret").write_text(CLIENT_SECRET)
    path = folder / "watcher.toml"
    path.write_text(f'''
[storage]
database = "state/events.db"

[[accounts]]
name = "m365"
host = "{mailbox.host}"
port = {mailbox.port}
security = "none"
username = "{mailbox.username}"
auth = "oauth2"
oauth_provider = "custom"
oauth_client_id = "{CLIENT_ID}"
oauth_client_secret_file = "client-secret"
oauth_token_endpoint = "{server.url('/token')}"
oauth_device_endpoint = "{server.url('/device')}"
oauth_scope = "mail"
lookback_days = 3650
timeout_seconds = 10
''')
    path.chmod(0o600)
    return path


def store_token(config: Path, token: Token) -> Path:
    oauth = load_config(config).accounts[0].oauth
    assert oauth is not None
    save_token(oauth.token_file, token)
    return oauth.token_file


def issued(server: TokenServer, expires_at: float | None = None) -> Token:
    data = server.issue()
    return Token(Secret(data["access_token"]), Secret(data["refresh_token"]), expires_at or time.time() + 3600)


def test_device_flow_stores_the_token_in_a_0600_file_and_logs_in(
        tmp_path: Path, oauth_mailbox: Mailbox, token_server: TokenServer) -> None:
    config = write_oauth_config(tmp_path, oauth_mailbox, token_server)
    result = run(config, "auth", "m365")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"To let watcher read {oauth_mailbox.username}, open {token_server.url('/activate')}",
        "and enter the code WDJB-MJHT",
        "Waiting for the sign-in (the code expires in 10 min) …",
        f"Token saved to {tmp_path / 'state' / 'tokens' / 'm365.json'} (mode 0600)",
        f"Logged in to 127.0.0.1:{oauth_mailbox.port} as {oauth_mailbox.username}",
    ]
    token_file = tmp_path / "state" / "tokens" / "m365.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    token = load_token(token_file)
    assert token.refresh_token is not None and token.refresh_token.reveal() in token_server.refresh_tokens
    assert token_server.polls == 2  # one authorization_pending, then the token


def test_check_logs_in_with_xoauth2_and_records_the_notice(
        tmp_path: Path, oauth_mailbox: Mailbox, token_server: TokenServer, oauth_dovecot: LocalDovecot) -> None:
    config = write_oauth_config(tmp_path, oauth_mailbox, token_server)
    token = issued(token_server)
    store_token(config, token)
    result = run(config, "check")
    assert result.exit_code == 0, result.output
    assert f"Login: user=<{oauth_mailbox.username}>, method=XOAUTH2" in oauth_dovecot.log_text()
    assert token_server.introspected == [token.access_token.reveal()]
    assert token_server.grants == []  # a valid token is used as it is
    events = [json.loads(line) for line in run(config, "events", "list", "--json").output.splitlines()]
    assert [(event["account"], event["kind"]) for event in events] == [("m365", "account_deactivated")]


def test_an_access_token_about_to_expire_is_refreshed_before_login(
        tmp_path: Path, oauth_mailbox: Mailbox, token_server: TokenServer) -> None:
    config = write_oauth_config(tmp_path, oauth_mailbox, token_server)
    old = issued(token_server, expires_at=time.time() + 120)  # inside the 5-minute margin
    token_file = store_token(config, old)
    result = run(config, "check")
    assert result.exit_code == 0, result.output
    fresh = load_token(token_file)
    assert token_server.grants == ["refresh_token"]
    assert token_server.introspected == [fresh.access_token.reveal()]  # the old token was never sent
    assert fresh.refresh_token == old.refresh_token and fresh.expires_at > time.time() + 3000
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


def test_a_token_the_server_rejects_is_refreshed_once_and_login_retried(
        tmp_path: Path, oauth_mailbox: Mailbox, token_server: TokenServer) -> None:
    config = write_oauth_config(tmp_path, oauth_mailbox, token_server)
    revoked = issued(token_server)
    token_server.access_tokens.discard(revoked.access_token.reveal())
    token_file = store_token(config, revoked)
    result = run(config, "check")
    assert result.exit_code == 0, result.output
    fresh = load_token(token_file)
    assert token_server.grants == ["refresh_token"]
    assert token_server.introspected == [revoked.access_token.reveal(), fresh.access_token.reveal()]


def test_a_revoked_refresh_token_gives_one_clear_error_line(
        tmp_path: Path, oauth_mailbox: Mailbox, token_server: TokenServer) -> None:
    config = write_oauth_config(tmp_path, oauth_mailbox, token_server)
    revoked = issued(token_server)
    token_server.access_tokens.discard(revoked.access_token.reveal())
    token_server.refresh_tokens.discard(revoked.refresh_token.reveal())  # type: ignore[union-attr]
    store_token(config, revoked)
    result = run(config, "check")
    assert result.exit_code == 1
    message = ("m365: the refresh token was refused (invalid_grant: Token has been expired or revoked.); "
               "run `watcher auth m365` to sign in again")
    lines = result.output.splitlines()
    assert [line for line in lines if "refresh token" in line] == [lines[2]]
    assert lines[2].split()[:2] == ["m365", "FAILED"] and lines[2].endswith(message)
    assert token_server.grants == ["refresh_token"]  # one try, no loop


def test_check_without_a_token_file_says_to_run_watcher_auth(
        tmp_path: Path, oauth_mailbox: Mailbox, token_server: TokenServer) -> None:
    config = write_oauth_config(tmp_path, oauth_mailbox, token_server)
    result = run(config, "check")
    assert result.exit_code == 1
    assert f"m365: no token file at {tmp_path / 'state' / 'tokens' / 'm365.json'}; run `watcher auth m365` " \
           "to sign in" in result.output


def oauth_settings(server: TokenServer, flow: str = "device") -> OAuthConfig:
    return OAuthConfig(provider="custom", flow=flow, client_id=CLIENT_ID, client_secret=Secret(CLIENT_SECRET),
                       token_endpoint=server.url("/token"), device_endpoint=server.url("/device"),
                       authorize_endpoint=server.url("/authorize"), scope="mail", token_file=Path("unused"))


def test_device_polling_honours_the_interval_and_slows_down_when_asked(token_server: TokenServer) -> None:
    token_server.polls, token_server.pending_polls, token_server.slow_downs = 0, 1, 2
    waits: list[float] = []
    authorization = DeviceAuthorization(Secret("dc-1"), "CODE", "http://127.0.0.1/", None, interval=5, expires_in=600)
    try:
        token = poll_device_token(oauth_settings(token_server), authorization, sleep=waits.append, clock=lambda: 0.0)
    finally:
        token_server.pending_polls, token_server.slow_downs = 1, 0
    assert waits == [5, 5, 10, 15]
    assert token.access_token.reveal() in token_server.access_tokens


def test_device_polling_stops_when_the_code_expires(token_server: TokenServer) -> None:
    token_server.polls, token_server.pending_polls = 0, 1000
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    authorization = DeviceAuthorization(Secret("dc-1"), "CODE", "http://127.0.0.1/", None, interval=5, expires_in=30)
    try:
        with pytest.raises(OAuthError, match="the code expired before sign-in was completed"):
            poll_device_token(oauth_settings(token_server), authorization, sleep=sleep, clock=lambda: now[0])
    finally:
        token_server.pending_polls = 1
    assert token_server.polls == 6  # at 5, 10 … 30 s, never after expires_in


def test_browser_flow_exchanges_the_redirected_code_with_its_pkce_verifier(token_server: TokenServer) -> None:
    shown: list[str] = []

    def browser(address: str, redirect: str) -> None:
        shown.append(redirect)
        # The person's browser: open the sign-in address, follow the redirect back to the loopback listener.
        threading.Thread(target=requests.get, args=(address,), kwargs={"timeout": 10}, daemon=True).start()

    token = browser_sign_in(oauth_settings(token_server, "browser"), browser, timeout=10)
    assert token.access_token.reveal() in token_server.access_tokens
    assert shown[0].startswith("http://127.0.0.1:") and token_server.codes == {}


def test_oauth2_accounts_need_no_password_and_get_their_provider_defaults(tmp_path: Path) -> None:
    (tmp_path / "watcher.toml").write_text('''
[[accounts]]
name = "office"
host = "outlook.office365.com"
username = "seller@example.com"
auth = "oauth2"
oauth_provider = "microsoft"
oauth_client_id = "00000000-1111"
oauth_tenant = "contoso.onmicrosoft.com"
''')
    oauth = load_config(tmp_path / "watcher.toml").accounts[0].oauth
    assert oauth is not None
    assert (oauth.flow, oauth.client_secret) == ("device", None)
    assert oauth.token_endpoint == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    assert oauth.scope == "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
    assert oauth.token_file == tmp_path / "tokens" / "office.json"


def test_oauth2_config_problems_are_reported_with_their_key_paths(tmp_path: Path) -> None:
    (tmp_path / "watcher.toml").write_text('''
[[accounts]]
name = "gmail"
host = "imap.gmail.com"
username = "seller@gmail.com"
password = "app-password"
auth = "oauth2"
oauth_provider = "google"
oauth_client_id = "id.apps.googleusercontent.com"

[[accounts]]
name = "own"
host = "imap.example.com"
username = "seller@example.com"
auth = "oauth2"
oauth_provider = "custom"
oauth_client_id = "id"
oauth_device_endpoint = "http://auth.example.com/device"
''')
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "watcher.toml")
    assert raised.value.problems == [
        "accounts[0].oauth_client_secret: required for oauth_provider 'google': give one of oauth_client_secret, "
        "oauth_client_secret_credential, oauth_client_secret_env, oauth_client_secret_file",
        'accounts[0].password: not used with auth = "oauth2" (the token replaces the password)',
        "accounts[1].oauth_token_endpoint: required for oauth_provider 'custom'",
        "accounts[1].oauth_device_endpoint: must be an https:// URL (http:// only for a loopback host), "
        "got 'http://auth.example.com/device'",
        "accounts[1].oauth_scope: required for oauth_provider 'custom'",
    ]


def test_tokens_never_appear_in_the_debug_log(
        tmp_path: Path, oauth_mailbox: Mailbox, token_server: TokenServer, caplog: pytest.LogCaptureFixture) -> None:
    config = write_oauth_config(tmp_path, oauth_mailbox, token_server)
    stale = issued(token_server)
    token_server.access_tokens.discard(stale.access_token.reveal())  # so a refresh happens too
    token_file = store_token(config, stale)
    caplog.set_level(logging.DEBUG)
    assert run(config, "-vv", "check").exit_code == 0
    fresh = load_token(token_file)
    secrets_used = [stale.access_token, fresh.access_token, fresh.refresh_token, Secret(CLIENT_SECRET)]
    assert "refreshing it and trying once more" in caplog.text
    assert [secret for secret in secrets_used if secret and secret.reveal() in caplog.text] == []
