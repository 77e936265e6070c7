"""Small helpers shared by the tests that drive the real pipeline."""

from __future__ import annotations

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
