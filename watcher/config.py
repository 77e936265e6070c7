"""Load and validate the one TOML configuration file; report every problem with its key path."""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from watcher.errors import ConfigError, SecretError
from watcher.model import KINDS, SEVERITIES
from watcher.secrets import Secret, SecretSource, read_secret

SEARCH_PATH = (
    Path("watcher.toml"),
    Path("~/.config/watcher/watcher.toml"),
    Path("/etc/watcher/watcher.toml"),
)
SECURITY_MODES = ("ssl", "starttls", "none")
DEFAULT_PORTS = {"ssl": 993, "starttls": 143, "none": 143}
AUTH_MODES = ("password", "oauth2")
OAUTH_FLOWS = ("device", "browser")
OAUTH_PROVIDERS_FILE = Path(__file__).with_name("oauth_providers.toml")
UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    """How an ``auth = "oauth2"`` account gets and refreshes its access token (provider defaults applied)."""

    provider: str
    flow: str  # "device" or "browser": how `watcher auth` obtains the first token
    client_id: str
    client_secret: Secret | None  # public clients (Microsoft device flow) have none
    token_endpoint: str
    device_endpoint: str | None
    authorize_endpoint: str | None
    scope: str
    token_file: Path
    authorize_parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AccountConfig:
    name: str
    host: str
    port: int
    security: str
    username: str
    password: Secret
    folders: tuple[str, ...]
    lookback_days: int
    ca_file: Path | None
    max_message_bytes: int
    timeout_seconds: float
    store: str
    oauth: OAuthConfig | None = None  # None: log in with the password


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily period of local wall-clock time, e.g. 22:00-07:00 (may span midnight)."""

    start: time
    end: time

    def end_of(self, moment: datetime, zone: ZoneInfo) -> datetime | None:
        """Return when the quiet period that ``moment`` falls in ends (aware, in ``zone``), or None when
        ``moment`` is outside quiet hours."""
        local = moment.astimezone(zone)
        now = local.time().replace(tzinfo=None)
        if self.start < self.end:
            inside, end_day = self.start <= now < self.end, local.date()
        else:
            inside = now >= self.start or now < self.end
            end_day = local.date() + timedelta(days=1) if now >= self.start else local.date()
        return datetime.combine(end_day, self.end, zone) if inside else None


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    name: str
    url: Secret
    platforms: tuple[str, ...]  # empty = all
    kinds: tuple[str, ...]
    accounts: tuple[str, ...]
    min_severity: str
    quiet_hours: QuietHours | None = None  # below-critical notifications wait until it ends
    timezone: ZoneInfo = UTC_ZONE  # of quiet_hours and digest
    digest: str | None = None  # a crontab expression: when the daily digest is made
    stores: tuple[str, ...] = ()  # empty = all

    def wants(self, platform: str | None, kind: str | None, severity: str | None, account: str,
              store: str | None = None) -> bool:
        """Return True when an event with these values passes this channel's filters."""
        if self.stores and store not in self.stores:
            return False
        if self.platforms and platform not in self.platforms:
            return False
        if self.kinds and kind not in self.kinds:
            return False
        if self.accounts and account not in self.accounts:
            return False
        return SEVERITIES.index(severity or "info") >= SEVERITIES.index(self.min_severity)


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    database: Path
    poll_seconds: int
    delivery_retry_hours: float
    rule_files: tuple[Path, ...]
    guidance_files: tuple[Path, ...]
    guidance_language: str
    trusted_authserv_ids: tuple[str, ...]
    accounts: tuple[AccountConfig, ...]
    channels: tuple[ChannelConfig, ...]
    reminder_hours: tuple[int, ...] = (72, 24)
    reannounce_hours: float = 24.0
    warnings: tuple[str, ...] = ()
    burst_window_minutes: float = 10.0
    burst_threshold: int = 3  # 0: never group


def find_config(explicit: str | None) -> Path:
    """Return the config path: ``explicit``, else $WATCHER_CONFIG, else the first that exists of SEARCH_PATH.

    Raise ConfigError when none is found.
    """
    if explicit:
        return Path(explicit)
    if os.environ.get("WATCHER_CONFIG"):
        return Path(os.environ["WATCHER_CONFIG"])
    for candidate in SEARCH_PATH:
        path = candidate.expanduser()
        if path.exists():
            return path
    searched = ", ".join(str(p) for p in SEARCH_PATH)
    raise ConfigError("watcher.toml", [f"no configuration file found (looked at --config, $WATCHER_CONFIG, {searched})"])


def load_config(path: Path) -> Config:
    """Read and validate ``path``. Raise ConfigError listing every problem found."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), [f"cannot read: {error}"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), [f"not valid TOML: {error}"]) from None
    reader = _Reader(path.parent.resolve())
    config = reader.config(path, document)
    if reader.problems:
        raise ConfigError(str(path), reader.problems)
    return config


class _Reader:
    """Walks the document, collecting problems instead of stopping at the first."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def table(self, document: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
        value = document.get(key, {})
        if not isinstance(value, dict):
            self.problem(key, f"must be a table, got {type(value).__name__}")
            return {}
        for unknown in sorted(set(value) - allowed):
            self.problem(f"{key}.{unknown}", "unknown key")
        return value

    def get(self, table: dict[str, Any], prefix: str, key: str, kind: type, default: Any = None, *, required: bool = False,
            check: Callable[[Any], str | None] | None = None) -> Any:
        path = f"{prefix}.{key}" if prefix else key
        if key not in table:
            if required:
                self.problem(path, "required")
            return default
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(path, f"must be {_type_name(kind)}, got {value!r}")
            return default
        if check is not None:
            message = check(value)
            if message:
                self.problem(path, message)
                return default
        return value

    def strings(self, table: dict[str, Any], prefix: str, key: str, default: tuple[str, ...] = (),
                allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
        path = f"{prefix}.{key}" if prefix else key
        value = table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.problem(path, f"must be a list of strings, got {value!r}")
            return default
        if allowed is not None:
            for index, item in enumerate(value):
                if item not in allowed:
                    self.problem(f"{path}[{index}]", f"unknown value {item!r}; expected one of {', '.join(allowed)}")
        return tuple(value)

    def path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base / path

    def secret(self, table: dict[str, Any], prefix: str, name: str) -> Secret | None:
        """Read the secret given by exactly one of NAME, NAME_file, NAME_env, NAME_credential."""
        sources = [(source, table[key]) for source, key in
                   ((SecretSource.VALUE, name), (SecretSource.FILE, f"{name}_file"),
                    (SecretSource.ENV, f"{name}_env"), (SecretSource.CREDENTIAL, f"{name}_credential"))
                   if key in table]
        choices = f"{name}, {name}_file, {name}_env or {name}_credential"
        if len(sources) != 1:
            self.problem(f"{prefix}.{name}", f"give exactly one of {choices}")
            return None
        source, value = sources[0]
        key = f"{prefix}.{name}" + ("" if source is SecretSource.VALUE else f"_{source.value}")
        if not isinstance(value, str) or not value:
            self.problem(key, "must be a non-empty string")
            return None
        try:
            return read_secret(source, str(self.path(value)) if source is SecretSource.FILE else value)
        except SecretError as error:
            self.problem(key, str(error))
            return None

    def config(self, path: Path, document: dict[str, Any]) -> Config:
        for unknown in sorted(set(document) - {"storage", "schedule", "delivery", "reminders", "classify", "authenticity",
                                               "accounts", "channels"}):
            self.problem(unknown, "unknown key")
        storage = self.table(document, "storage", {"database"})
        schedule = self.table(document, "schedule", {"poll_seconds"})
        delivery = self.table(document, "delivery", {"retry_hours", "burst_window_minutes", "burst_threshold"})
        classify = self.table(document, "classify", {"rule_files", "guidance_files", "guidance_language"})
        authenticity = self.table(document, "authenticity", {"trusted_authserv_ids"})
        reminders = self.table(document, "reminders", {"deadline_hours", "reannounce_critical_hours"})
        hours = reminders.get("deadline_hours", [72, 24])
        if not isinstance(hours, list) or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hours):
            self.problem("reminders.deadline_hours", f"must be a list of positive whole hours, got {hours!r}")
            hours = [72, 24]
        positive = _at_least(1)
        database = self.path(self.get(storage, "storage", "database", str, "events.db"))
        accounts = self.accounts(document.get("accounts", []), database.parent)
        channels = self.channels(document.get("channels", []), {account.name for account in accounts},
                                 {account.store for account in accounts})
        if "accounts" not in document:
            self.problem("accounts", "at least one [[accounts]] entry is required")
        literal_password = any(isinstance(entry, dict) and "password" in entry for entry in document.get("accounts", []) or [])
        if literal_password and _readable_by_others(path):
            self.warnings.append(f"{path} holds a password and other users can read it (chmod 600 it)")
        return Config(
            path=path,
            database=database,
            poll_seconds=self.get(schedule, "schedule", "poll_seconds", int, 120, check=positive),
            delivery_retry_hours=self.get(delivery, "delivery", "retry_hours", float, 24.0, check=_at_least(0)),
            rule_files=tuple(self.path(p) for p in self.strings(classify, "classify", "rule_files")),
            guidance_files=tuple(self.path(p) for p in self.strings(classify, "classify", "guidance_files")),
            guidance_language=self.get(classify, "classify", "guidance_language", str, "auto"),
            trusted_authserv_ids=self.strings(authenticity, "authenticity", "trusted_authserv_ids"),
            accounts=accounts,
            channels=channels,
            reminder_hours=tuple(sorted(set(hours), reverse=True)),
            reannounce_hours=self.get(reminders, "reminders", "reannounce_critical_hours", float, 24.0,
                                      check=_at_least(0)),
            warnings=tuple(self.warnings),
            burst_window_minutes=self.get(delivery, "delivery", "burst_window_minutes", float, 10.0,
                                          check=_at_least(0)),
            burst_threshold=self.get(delivery, "delivery", "burst_threshold", int, 3,
                                     check=lambda v: None if v == 0 or v >= 2 else f"must be 0 (off) or at least 2, got {v}"),
        )

    def named_tables(self, entries: Any, key: str, allowed: set[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Yield (key path, name, table) for each table of the array ``key``, reporting unknown keys
        and missing or duplicate names."""
        if not isinstance(entries, list):
            self.problem(key, f"must be an array of tables ([[{key}]])")
            return
        names: set[str] = set()
        for index, entry in enumerate(entries):
            prefix = f"{key}[{index}]"
            if not isinstance(entry, dict):
                self.problem(prefix, "must be a table")
                continue
            for unknown in sorted(set(entry) - allowed):
                self.problem(f"{prefix}.{unknown}", "unknown key")
            name = self.get(entry, prefix, "name", str, f"{key}-{index}", required=True, check=_nonempty)
            if name in names:
                self.problem(f"{prefix}.name", f"duplicate name {name!r}")
            names.add(name)
            yield prefix, name, entry

    def accounts(self, entries: Any, state_dir: Path) -> tuple[AccountConfig, ...]:
        allowed = {"name", "store", "host", "port", "security", "username", "password", "password_file",
                   "password_env", "password_credential", "folders", "lookback_days", "ca_file",
                   "max_message_bytes", "timeout_seconds", "auth", *OAUTH_KEYS}
        result: list[AccountConfig] = []
        for prefix, name, entry in self.named_tables(entries, "accounts", allowed):
            security = self.get(entry, prefix, "security", str, "ssl",
                                check=lambda v: None if v in SECURITY_MODES else f"must be one of {', '.join(SECURITY_MODES)}, got {v!r}")
            host = self.get(entry, prefix, "host", str, "", required=True, check=_nonempty)
            if security == "none" and host and not _is_loopback(host):
                self.problem(f"{prefix}.security", f'"none" sends the password in clear text; only allowed for a loopback host, not {host!r}')
            ca_file = self.get(entry, prefix, "ca_file", str)
            if ca_file is not None and not self.path(ca_file).is_file():
                self.problem(f"{prefix}.ca_file", f"file not found: {self.path(ca_file)}")
            auth = self.get(entry, prefix, "auth", str, "password",
                            check=lambda v: None if v in AUTH_MODES else f"must be one of {', '.join(AUTH_MODES)}, got {v!r}")
            oauth = self.oauth(entry, prefix, name, state_dir) if auth == "oauth2" else None
            if auth != "oauth2":
                for key in sorted(OAUTH_KEYS & set(entry)):
                    self.problem(f"{prefix}.{key}", 'only used with auth = "oauth2"')
            password = self.secret(entry, prefix, "password") if auth != "oauth2" else None
            if auth == "oauth2":
                for key in sorted(PASSWORD_KEYS & set(entry)):
                    self.problem(f"{prefix}.{key}", 'not used with auth = "oauth2" (the token replaces the password)')
            result.append(AccountConfig(
                name=name,
                store=self.get(entry, prefix, "store", str, name, check=_nonempty),
                host=host,
                port=self.get(entry, prefix, "port", int, DEFAULT_PORTS.get(security, 993), check=_port),
                security=security,
                username=self.get(entry, prefix, "username", str, "", required=True, check=_nonempty),
                password=password or Secret(""),
                folders=self.strings(entry, prefix, "folders", ("INBOX",)) or ("INBOX",),
                lookback_days=self.get(entry, prefix, "lookback_days", int, 30, check=_at_least(0)),
                ca_file=self.path(ca_file) if ca_file else None,
                max_message_bytes=self.get(entry, prefix, "max_message_bytes", int, 5_000_000, check=_at_least(1024)),
                timeout_seconds=self.get(entry, prefix, "timeout_seconds", float, 30.0, check=_at_least(1)),
                oauth=oauth,
            ))
        return tuple(result)

    def oauth(self, entry: dict[str, Any], prefix: str, name: str, state_dir: Path) -> OAuthConfig | None:
        """Read the oauth_* keys of an ``auth = "oauth2"`` account, filling in its provider's defaults."""
        providers = oauth_providers()
        provider = self.get(entry, prefix, "oauth_provider", str, None, required=True,
                            check=lambda v: None if v in providers else f"must be one of {', '.join(providers)}, got {v!r}")
        if provider is None:
            return None
        defaults = providers[provider]
        tenant = self.get(entry, prefix, "oauth_tenant", str, defaults.get("default_tenant", ""), check=_nonempty)
        if "oauth_tenant" in entry and "default_tenant" not in defaults:
            self.problem(f"{prefix}.oauth_tenant", f"not used by oauth_provider {provider!r}")

        def endpoint(key: str, default_key: str, *, required: bool) -> str | None:
            value: str | None = self.get(entry, prefix, key, str, None, check=_endpoint_problem)
            if value is None and key not in entry:
                default = defaults.get(default_key)
                value = default.replace("{tenant}", tenant) if isinstance(default, str) else None
                if value is None and required:
                    self.problem(f"{prefix}.{key}", f"required for oauth_provider {provider!r}")
            return value

        flow = self.get(entry, prefix, "oauth_flow", str, defaults.get("flow", "device"),
                        check=lambda v: None if v in OAUTH_FLOWS else f"must be one of {', '.join(OAUTH_FLOWS)}, got {v!r}")
        token_endpoint = endpoint("oauth_token_endpoint", "token_endpoint", required=True)
        device_endpoint = endpoint("oauth_device_endpoint", "device_endpoint", required=flow == "device")
        authorize_endpoint = endpoint("oauth_authorize_endpoint", "authorize_endpoint", required=flow == "browser")
        scope = self.get(entry, prefix, "oauth_scope", str, defaults.get("scope"), check=_nonempty)
        if scope is None:
            self.problem(f"{prefix}.oauth_scope", f"required for oauth_provider {provider!r}")
        client_id = self.get(entry, prefix, "oauth_client_id", str, "", required=True, check=_nonempty)
        client_secret = None
        if SECRET_KEYS & set(entry):
            client_secret = self.secret(entry, prefix, "oauth_client_secret")
        elif defaults.get("client_secret_required", False):
            self.problem(f"{prefix}.oauth_client_secret",
                         f"required for oauth_provider {provider!r}: give one of {', '.join(sorted(SECRET_KEYS))}")
        token_file = self.get(entry, prefix, "oauth_token_file", str, None, check=_nonempty)
        parameters = defaults.get("authorize_parameters", {})
        return OAuthConfig(
            provider=provider,
            flow=flow,
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint=token_endpoint or "",
            device_endpoint=device_endpoint,
            authorize_endpoint=authorize_endpoint,
            scope=scope or "",
            token_file=self.path(token_file) if token_file else state_dir / "tokens" / f"{_file_name(name)}.json",
            authorize_parameters=tuple(sorted((str(k), str(v)) for k, v in parameters.items())),
        )

    def channels(self, entries: Any, account_names: set[str], store_names: set[str]) -> tuple[ChannelConfig, ...]:
        allowed = {"name", "url", "url_file", "url_env", "url_credential", "platforms", "kinds", "accounts", "stores",
                   "min_severity", "quiet_hours", "timezone", "digest"}
        result: list[ChannelConfig] = []
        for prefix, name, entry in self.named_tables(entries, "channels", allowed):
            accounts = self.strings(entry, prefix, "accounts")
            for position, account in enumerate(accounts):
                if account not in account_names:
                    self.problem(f"{prefix}.accounts[{position}]", f"no account named {account!r}")
            stores = self.strings(entry, prefix, "stores")
            for position, store in enumerate(stores):
                if store not in store_names:
                    self.problem(f"{prefix}.stores[{position}]", f"no account belongs to a store named {store!r}")
            url = self.secret(entry, prefix, "url")
            zone = self.zone(entry, prefix)
            quiet = self.get(entry, prefix, "quiet_hours", str, None, check=_quiet_hours_problem)
            result.append(ChannelConfig(
                name=name,
                url=url or Secret(""),
                platforms=self.strings(entry, prefix, "platforms"),
                kinds=self.strings(entry, prefix, "kinds", allowed=KINDS),
                accounts=accounts,
                min_severity=self.get(entry, prefix, "min_severity", str, "info",
                                      check=lambda v: None if v in SEVERITIES else f"must be one of {', '.join(SEVERITIES)}, got {v!r}"),
                quiet_hours=_quiet_hours(quiet) if quiet else None,
                timezone=zone,
                digest=self.get(entry, prefix, "digest", str, None, check=functools.partial(_crontab_problem, zone=zone)),
                stores=stores,
            ))
        return tuple(result)

    def zone(self, entry: dict[str, Any], prefix: str) -> ZoneInfo:
        """Read a channel's IANA ``timezone`` (default UTC)."""
        name = self.get(entry, prefix, "timezone", str, "UTC")
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(f"{prefix}.timezone", f"unknown time zone {name!r}; use an IANA name such as \"Europe/Berlin\"")
            return UTC_ZONE


PASSWORD_KEYS = frozenset({"password", "password_file", "password_env", "password_credential"})
SECRET_KEYS = frozenset({"oauth_client_secret", "oauth_client_secret_file", "oauth_client_secret_env",
                         "oauth_client_secret_credential"})
OAUTH_KEYS = frozenset({"oauth_provider", "oauth_flow", "oauth_client_id", "oauth_tenant", "oauth_token_endpoint",
                        "oauth_device_endpoint", "oauth_authorize_endpoint", "oauth_scope", "oauth_token_file"}) | SECRET_KEYS


@functools.cache
def oauth_providers() -> dict[str, dict[str, Any]]:
    """Return the provider defaults from oauth_providers.toml, by provider name."""
    with OAUTH_PROVIDERS_FILE.open("rb") as file:
        return tomllib.load(file)


def _endpoint_problem(value: str) -> str | None:
    """Tokens travel to these URLs: https, or http only to a loopback host."""
    parts = urlsplit(value)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return None
    return f"must be an https:// URL (http:// only for a loopback host), got {value!r}"


def _file_name(name: str) -> str:
    """Return ``name`` made safe as one file name (an account name may hold any character)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "account"


_QUIET_HOURS = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)")


def _quiet_hours(value: str) -> QuietHours:
    match = _QUIET_HOURS.fullmatch(value.replace(" ", ""))
    assert match is not None  # checked by _quiet_hours_problem
    hours = [int(part) for part in match.groups()]
    return QuietHours(time(hours[0], hours[1]), time(hours[2], hours[3]))


def _quiet_hours_problem(value: str) -> str | None:
    if not _QUIET_HOURS.fullmatch(value.replace(" ", "")):
        return f'must be "HH:MM-HH:MM" in 24-hour time (e.g. "22:00-07:00"), got {value!r}'
    quiet = _quiet_hours(value)
    return f"start and end are the same ({value!r}); leave quiet_hours out to have none" if quiet.start == quiet.end else None


def _crontab_problem(value: str, zone: ZoneInfo) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value, timezone=zone)
    except ValueError as error:
        return f"not a cron expression (minute hour day month weekday, e.g. \"0 8 * * *\"): {error}"
    return None


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}.get(kind, kind.__name__)


def _nonempty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _port(value: int) -> str | None:
    return None if 0 < value < 65536 else f"must be a port number 1-65535, got {value}"


def _at_least(minimum: float) -> Callable[[float], str | None]:
    return lambda value: None if value >= minimum else f"must be at least {minimum:g}, got {value}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH))
    except OSError:
        return False
