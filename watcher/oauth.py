"""OAuth2 access tokens for IMAP (XOAUTH2 / OAUTHBEARER): the token file, the token endpoint, refreshing.

A token file holds one account's access token, refresh token and expiry as JSON, outside the config,
written atomically with mode 0600 in a folder of mode 0700. ``access_token`` hands out a token that is
valid for at least REFRESH_MARGIN, refreshing it first when needed; ``force_refresh=True`` refreshes even
a token that looks valid (the server refused it). A refused refresh token means a person must sign in
again (`watcher auth ACCOUNT`): that is AuthenticationFailed, like a wrong password.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from watcher.config import AccountConfig, OAuthConfig
from watcher.errors import AuthenticationFailed, OAuthError
from watcher.secrets import Secret

log = logging.getLogger(__name__)

REFRESH_MARGIN = 300.0  # seconds: a token expiring sooner than this is refreshed before use
HTTP_TIMEOUT = (10.0, 30.0)  # connect, read
# Token errors that no retry can fix: the grant was revoked, expired or never valid for this client.
REVOKED_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True, slots=True)
class Token:
    """An access token, the refresh token that renews it (if the server gave one) and when it expires."""

    access_token: Secret
    refresh_token: Secret | None
    expires_at: float  # seconds since the epoch

    def expires_within(self, seconds: float, now: float | None = None) -> bool:
        """Return True when the access token expires within ``seconds`` from ``now`` (default: the clock)."""
        return self.expires_at - (time.time() if now is None else now) < seconds


def token_from_response(data: Mapping[str, Any], previous: Token | None = None, now: float | None = None) -> Token:
    """Return the Token a successful token-endpoint response describes; raise OAuthError when it has none.

    A refresh response without a new refresh token keeps ``previous``'s (Google never rotates it).
    """
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise OAuthError("the token endpoint's answer holds no access_token")
    refresh = data.get("refresh_token")
    lifetime = data.get("expires_in", 3600)
    try:
        seconds = float(lifetime)
    except (TypeError, ValueError):
        seconds = 3600.0
    return Token(
        access_token=Secret(access),
        refresh_token=Secret(refresh) if isinstance(refresh, str) and refresh else
        (previous.refresh_token if previous else None),
        expires_at=(time.time() if now is None else now) + seconds,
    )


def load_token(path: Path) -> Token:
    """Return the token stored at ``path``; raise OAuthError when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OAuthError(f"no token file at {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise OAuthError(f"cannot read token file {path}: {error.__class__.__name__}") from None
    access, refresh, expires = data.get("access_token"), data.get("refresh_token"), data.get("expires_at")
    if not isinstance(access, str) or not isinstance(expires, int | float) or not isinstance(refresh, str | None):
        raise OAuthError(f"token file {path} is not a watcher token file")
    return Token(Secret(access), Secret(refresh) if refresh else None, float(expires))


def save_token(path: Path, token: Token) -> None:
    """Write ``token`` to ``path`` atomically, mode 0600, creating its folder with mode 0700.

    Raise OAuthError when it cannot be written.
    """
    content = json.dumps({
        "access_token": token.access_token.reveal(),
        "refresh_token": token.refresh_token.reveal() if token.refresh_token else None,
        "expires_at": round(token.expires_at),
    }, indent=2)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file 0600, so the token is never readable by others, not even for a moment.
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(content + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as error:
        raise OAuthError(f"cannot write token file {path}: {error.strerror or error.__class__.__name__}") from None


@contextlib.contextmanager
def token_lock(path: Path) -> Iterator[None]:
    """Hold the lock on one token file: against other threads (one IDLE connection per folder) and other
    watcher processes, so two refreshes never race and a rotated refresh token is never lost."""
    with _locks_guard:
        lock = _locks.setdefault(path, threading.Lock())
    with lock:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - closed below
        except OSError as error:
            raise OAuthError(f"cannot lock token file {path}: {error.strerror or error.__class__.__name__}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            handle.close()


def access_token(account: AccountConfig, *, force_refresh: bool = False) -> Secret:
    """Return a usable access token for ``account`` (which must use oauth2), refreshing and saving it
    when it expires within REFRESH_MARGIN or when ``force_refresh``.

    Raise AuthenticationFailed when there is no token yet or the refresh token is refused (a person must
    run `watcher auth`), OAuthError when the token endpoint cannot be reached or answers nonsense.
    """
    oauth = _oauth_of(account)
    with token_lock(oauth.token_file):
        try:
            token = load_token(oauth.token_file)
        except OAuthError as error:
            raise AuthenticationFailed(f"{account.name}: {error}; run `watcher auth {account.name}` to sign in") from None
        if not force_refresh and not token.expires_within(REFRESH_MARGIN):
            return token.access_token
        if token.refresh_token is None:
            raise AuthenticationFailed(f"{account.name}: the access token expired and there is no refresh token; "
                                       f"run `watcher auth {account.name}` to sign in again")
        reason = "refused by the server" if force_refresh else "expiring"
        log.info("%s: access token %s; refreshing it at %s", account.name, reason, oauth.token_endpoint)
        try:
            fresh = refresh(oauth, token)
        except AuthenticationFailed as error:
            raise AuthenticationFailed(f"{account.name}: {error}; run `watcher auth {account.name}` to sign in again") from None
        except OAuthError as error:
            raise OAuthError(f"{account.name}: {error}") from None
        save_token(oauth.token_file, fresh)
        return fresh.access_token


def refresh(oauth: OAuthConfig, token: Token) -> Token:
    """Exchange ``token``'s refresh token for a new access token and return it (not saved).

    Raise AuthenticationFailed when the server refuses the refresh token, OAuthError on any other failure.
    """
    if token.refresh_token is None:
        raise AuthenticationFailed("no refresh token")
    data = post_form(oauth.token_endpoint, client_fields(oauth) | {
        "grant_type": "refresh_token",
        "refresh_token": token.refresh_token.reveal(),
    })
    error = data.get("error")
    if isinstance(error, str):
        detail = describe_error(data)
        if error in REVOKED_ERRORS:
            raise AuthenticationFailed(f"the refresh token was refused ({detail})")
        raise OAuthError(f"refreshing the token failed ({detail})")
    return token_from_response(data, previous=token)


def client_fields(oauth: OAuthConfig) -> dict[str, str]:
    """Return the client's identification for a token request (client_secret_post)."""
    fields = {"client_id": oauth.client_id}
    if oauth.client_secret is not None:
        fields["client_secret"] = oauth.client_secret.reveal()
    return fields


def post_form(url: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """POST ``fields`` form-encoded to ``url`` and return the JSON object it answers (error answers too).

    Raise OAuthError when the endpoint cannot be reached or does not answer a JSON object.
    """
    started = time.monotonic()
    try:
        response = requests.post(url, data=dict(fields), headers={"Accept": "application/json"},
                                 timeout=HTTP_TIMEOUT)
    except requests.RequestException as error:
        raise OAuthError(f"{url} cannot be reached: {error.__class__.__name__}") from None
    log.info("POST %s: HTTP %s in %.2fs", url, response.status_code, time.monotonic() - started)
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise OAuthError(f"{url} answered HTTP {response.status_code} without a JSON object")
    if response.status_code >= 400 and not isinstance(data.get("error"), str):
        raise OAuthError(f"{url} answered HTTP {response.status_code}")
    return data


def describe_error(data: Mapping[str, Any]) -> str:
    """Return an OAuth error answer as ``error: description`` (both are the server's words, never secrets)."""
    description = data.get("error_description")
    text = str(data.get("error"))
    if isinstance(description, str) and description.strip():
        # Microsoft appends trace and correlation ids on further lines.
        return f"{text}: {description.strip().splitlines()[0]}"
    return text


def _oauth_of(account: AccountConfig) -> OAuthConfig:
    if account.oauth is None:
        raise OAuthError(f'{account.name}: the account does not use auth = "oauth2"')
    return account.oauth
