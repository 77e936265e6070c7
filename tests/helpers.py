"""Small helpers shared by the tests that drive the real pipeline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner, Result

from watcher.cli import cli
from watcher.sandbox import Mailbox


def write_config(folder: Path, mailboxes: dict[str, Mailbox], channels: dict[str, str], extra: str = "",
                 account_extra: str = "") -> Path:
    """Write a watcher.toml for ``mailboxes`` (name → Mailbox) and ``channels`` (name → Apprise URL)."""
    parts = ['[storage]\ndatabase = "events.db"\n', extra]
    for name, mailbox in mailboxes.items():
        (folder / f"{name}.pw").write_text(mailbox.password)
        parts.append(f'''
[[accounts]]
name = "{name}"
host = "{mailbox.host}"
port = {mailbox.port}
security = "none"
username = "{mailbox.username}"
password_file = "{name}.pw"
lookback_days = 3650
timeout_seconds = 10
{account_extra}
''')
    for name, url in channels.items():
        parts.append(f'\n[[channels]]\nname = "{name}"\nurl = "{url}"\n')
    path = folder / "watcher.toml"
    path.write_text("".join(parts))
    path.chmod(0o600)
    return path


def run(config: Path, *args: str) -> Result:
    """Run the CLI in-process with ``--config config``."""
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


class Watcher:
    """A `watcher run` process whose stderr goes to a file the test can read while it runs."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self.output = log.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "watcher", "-v", "--config", str(config), "run"],
                                        stdout=self.output, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 15, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.text().count(needle) < count:
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=12)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()
        return self.process.returncode
