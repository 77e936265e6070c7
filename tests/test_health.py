"""Retry timing: exponential backoff with jitter, and a refused login that alerts once."""

from __future__ import annotations

from pathlib import Path

from watcher.errors import AuthenticationFailed, FetchError
from watcher.health import AUTH_RETRY_SECONDS, AccountHealth, Backoff


def test_backoff_doubles_from_one_second_up_to_five_minutes_with_jitter() -> None:
    steady = Backoff(jitter=lambda: 1.0)
    assert [steady.next_delay() for _ in range(11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    low = Backoff(jitter=lambda: 0.0)
    assert [low.next_delay() for _ in range(3)] == [0.5, 1.0, 2.0]
    steady.reset()
    assert steady.next_delay() == 1


def test_a_refused_login_waits_long_and_alerts_once_until_it_recovers(tmp_path: Path) -> None:
    alerts: list[str] = []
    now = [1000.0]
    health = AccountHealth("us-store", tmp_path / "events.db", lambda title, body: alerts.append(title),
                           clock=lambda: now[0])
    assert health.failed(AuthenticationFailed("us-store: login refused")) == AUTH_RETRY_SECONDS
    assert health.state == "auth_failed" and not health.may_try()
    health.failed(AuthenticationFailed("us-store: login refused"))
    again = AccountHealth("us-store", tmp_path / "events.db", lambda title, body: alerts.append(title))
    again.failed(AuthenticationFailed("us-store: login refused"))  # as after a restart
    assert alerts == ["[ACTION NEEDED] watcher cannot log in to us-store"]
    now[0] += AUTH_RETRY_SECONDS
    assert health.may_try()
    health.succeeded()
    health.succeeded()
    assert alerts[1:] == ["[RECOVERED] watcher can log in to us-store again"]
    assert health.state == "ok"


def test_other_failures_back_off_without_alerting(tmp_path: Path) -> None:
    alerts: list[str] = []
    health = AccountHealth("us-store", tmp_path / "events.db", lambda title, body: alerts.append(title))
    delays = [health.failed(FetchError("us-store: connect failed")) for _ in range(3)]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and 2 <= delays[2] <= 4
    assert health.state == "backing_off" and alerts == []
    health.succeeded()
    assert health.state == "ok" and health.may_try()
