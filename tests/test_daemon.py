"""`watcher run` as a real process: it polls, records, delivers, and stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import write_config

from watcher.demo import sample_messages
from watcher.sandbox import HttpSink, Mailbox


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "watcher", "--config", str(config), "run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_run_notifies_new_mail_and_stops_cleanly_on_a_signal(mailbox: Mailbox, http_sink: HttpSink, tmp_path: Path,
                                                             stop_signal: signal.Signals) -> None:
    config = write_config(tmp_path, {"us-store": mailbox}, {"hook": http_sink.url()},
                          extra="[schedule]\npoll_seconds = 1\n")
    process = start(config)
    try:
        time.sleep(1.5)  # the first check finds an empty mailbox
        mailbox.append(sample_messages(datetime.now(UTC))[0])
        posts = http_sink.wait_for(1, timeout=15)
        assert posts[0].body["title"] == "[CRITICAL] Amazon: account deactivated — us-store"
        started = time.monotonic()
        process.send_signal(stop_signal)
        process.wait(timeout=10)
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr.decode()
    log = stderr.decode()
    assert "watching 1 accounts every 1s" in log
    assert "stopping" in log
    assert mailbox.password not in log
    assert len(http_sink.requests) == 1  # nothing sent twice


def test_run_with_a_bad_config_exits_2_before_starting(tmp_path: Path) -> None:
    config = tmp_path / "watcher.toml"
    config.write_text("[[accounts]]\nname = 1\n")
    result = subprocess.run([sys.executable, "-m", "watcher", "--config", str(config), "run"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "accounts[0].name: must be a string, got 1" in result.stderr
    assert "Traceback" not in result.stderr
