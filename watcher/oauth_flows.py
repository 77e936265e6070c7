"""Signing in once to get an account's first OAuth2 token: the device flow and the browser flow.

- Device flow (RFC 8628): ask the device-authorization endpoint for a code, show it and the address to
  type it at (on any device), then poll the token endpoint every ``interval`` seconds (longer after
  ``slow_down``) until the person signed in, declined, or the code expired.
- Browser flow (RFC 6749 authorization code with PKCE, RFC 7636, and a loopback redirect, RFC 8252):
  show the sign-in address; the provider redirects the browser to http://127.0.0.1:PORT/ where a
  one-shot HTTP listener takes the code, which is exchanged for the token.

Both return a Token; saving it is the caller's job (watcher.oauth.save_token).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from watcher.config import OAuthConfig
from watcher.errors import OAuthError
from watcher.oauth import Token, client_fields, describe_error, post_form, token_from_response
from watcher.secrets import Secret

log = logging.getLogger(__name__)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_SECONDS = 5.0  # RFC 8628 §3.5: add this to the interval after each slow_down
BROWSER_TIMEOUT = 300.0
_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """What the device-authorization endpoint answered: the code to show and how to poll."""

    device_code: Secret
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: float
    expires_in: float


def request_device_code(oauth: OAuthConfig) -> DeviceAuthorization:
    """Ask the device-authorization endpoint for a user code; raise OAuthError when it refuses."""
    if not oauth.device_endpoint:
        raise OAuthError("no device authorization endpoint is configured (oauth_device_endpoint)")
    data = post_form(oauth.device_endpoint, {"client_id": oauth.client_id, "scope": oauth.scope})
    if isinstance(data.get("error"), str):
        raise OAuthError(f"the device authorization request was refused ({describe_error(data)})")
    # Google calls it verification_url; RFC 8628 and Microsoft verification_uri.
    uri = data.get("verification_uri") or data.get("verification_url")
    device_code, user_code = data.get("device_code"), data.get("user_code")
    if not (isinstance(device_code, str) and isinstance(user_code, str) and isinstance(uri, str)):
        raise OAuthError(f"{oauth.device_endpoint} answered without device_code, user_code and verification_uri")
    complete = data.get("verification_uri_complete")
    return DeviceAuthorization(
        device_code=Secret(device_code),
        user_code=user_code,
        verification_uri=uri,
        verification_uri_complete=complete if isinstance(complete, str) else None,
        interval=_seconds(data.get("interval"), 5.0),
        expires_in=_seconds(data.get("expires_in"), 900.0),
    )


def poll_device_token(oauth: OAuthConfig, authorization: DeviceAuthorization, *,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> Token:
    """Poll the token endpoint until the person has signed in; return the token.

    Waits ``interval`` seconds before each request, 5 s longer after every ``slow_down``. Raise OAuthError
    when sign-in was declined, the code expired (``expires_in`` passed) or the endpoint fails.
    """
    deadline = clock() + authorization.expires_in
    interval = authorization.interval
    fields = client_fields(oauth) | {"grant_type": DEVICE_GRANT, "device_code": authorization.device_code.reveal()}
    while True:
        if clock() + interval > deadline:
            raise OAuthError("the code expired before sign-in was completed; run `watcher auth` again")
        sleep(interval)
        data = post_form(oauth.token_endpoint, fields)
        error = data.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += SLOW_DOWN_SECONDS
            log.info("token endpoint asked to slow down; polling every %.0fs", interval)
            continue
        if error == "access_denied":
            raise OAuthError("sign-in was declined")
        if error == "expired_token":
            raise OAuthError("the code expired before sign-in was completed; run `watcher auth` again")
        if isinstance(error, str):
            raise OAuthError(f"the token request was refused ({describe_error(data)})")
        return token_from_response(data)


def browser_sign_in(oauth: OAuthConfig, show: Callable[[str, str], None], *, port: int = 0,
                    timeout: float = BROWSER_TIMEOUT) -> Token:
    """Run the authorization-code flow with PKCE: call ``show`` with the sign-in address and the redirect
    address it leads back to, wait up to
    ``timeout`` seconds for the browser's redirect to http://127.0.0.1:``port``/ (0 = any free port), then
    exchange the code for a token and return it. Raise OAuthError when it is declined, times out or fails.
    """
    if not oauth.authorize_endpoint:
        raise OAuthError("no authorization endpoint is configured (oauth_authorize_endpoint)")
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    try:
        server = _RedirectServer((_LOOPBACK, port), _RedirectHandler)
    except OSError as error:
        raise OAuthError(f"cannot listen on {_LOOPBACK}:{port} for the sign-in redirect: {error.strerror}") from None
    with server:
        redirect_uri = f"http://{_LOOPBACK}:{server.server_address[1]}/"
        query = dict(oauth.authorize_parameters) | {
            "client_id": oauth.client_id, "response_type": "code", "redirect_uri": redirect_uri,
            "scope": oauth.scope, "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
        }
        separator = "&" if urlsplit(oauth.authorize_endpoint).query else "?"
        show(f"{oauth.authorize_endpoint}{separator}{urlencode(query)}", redirect_uri)
        answer = server.wait(timeout)
    if answer is None:
        raise OAuthError(f"no sign-in arrived at {redirect_uri} within {timeout:.0f}s")
    if answer.get("state") != state:
        raise OAuthError("the sign-in redirect carried the wrong state; run `watcher auth` again")
    if "error" in answer:
        raise OAuthError(f"sign-in failed ({describe_error(answer)})")
    code = answer.get("code")
    if not code:
        raise OAuthError("the sign-in redirect carried no code")
    data = post_form(oauth.token_endpoint, client_fields(oauth) | {
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier,
    })
    if isinstance(data.get("error"), str):
        raise OAuthError(f"the code was not accepted ({describe_error(data)})")
    return token_from_response(data)


class _RedirectServer(HTTPServer):
    """Serves 127.0.0.1 until one request carries ``code`` or ``error`` in its query."""

    answer: dict[str, str] | None = None

    def wait(self, timeout: float) -> dict[str, str] | None:
        deadline = time.monotonic() + timeout
        self.timeout = 1.0
        while self.answer is None and time.monotonic() < deadline:
            self.handle_request()
        return self.answer


class _RedirectHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
        fields = {key: values[0] for key, values in parse_qs(urlsplit(self.path).query).items()}
        assert isinstance(self.server, _RedirectServer)
        if "code" not in fields and "error" not in fields:
            self.send_error(404)  # e.g. the browser asking for /favicon.ico
            return
        self.server.answer = fields
        text = b"watcher: sign-in received. You can close this tab.\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the query holds the code: never log it
        pass


def _seconds(value: object, default: float) -> float:
    try:
        return float(value) if value is not None else default  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
