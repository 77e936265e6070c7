"""`watcher demo`: the whole pipeline against a throwaway local Dovecot seeded with sample mail.

It writes a real config, runs the same check as `watcher check`, prints the notifications a local
json:// channel received, then the event log — what a new user sees on their own mailbox.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from importlib import resources
from pathlib import Path

from watcher.config import load_config
from watcher.delivery import deliver_due
from watcher.pipeline import Engine, check_account
from watcher.sandbox import HttpSink, LocalDovecot
from watcher.store import Store

_DATE_LINE = re.compile(rb"^Date: [^\r\n]*", re.MULTILINE)

CONFIG_TEMPLATE = """\
# Written by `watcher demo`: a local Dovecot and a local JSON channel.
[storage]
database = "events.db"

[[accounts]]
name = "lotus-home-us"
store = "Lotus Home"
host = "127.0.0.1"
port = {port}
security = "none"             # allowed only because the host is loopback
username = "{username}"
password_file = "imap-password"
folders = ["INBOX"]
lookback_days = 30

[[channels]]
name = "local-json"
url_file = "channel-url"
"""


def sample_messages(now: datetime) -> list[bytes]:
    """Return the packaged sample mail, re-dated to the last few days so deadlines lie ahead."""
    files = sorted((item for item in resources.files("watcher").joinpath("demo").iterdir() if item.name.endswith(".eml")),
                   key=lambda item: item.name)
    messages = []
    for offset, item in enumerate(reversed(files)):
        stamp = format_datetime(now - timedelta(hours=6 * offset + 1)).encode()
        messages.append(_DATE_LINE.sub(b"Date: " + stamp, item.read_bytes(), count=1))
    return list(reversed(messages))


def run_demo(keep: bool, echo: Callable[[str], None]) -> None:
    """Run the demo, printing as it goes. Raise SandboxError when Dovecot is not installed."""
    folder = Path(tempfile.mkdtemp(prefix="watcher-demo-"))
    try:
        with LocalDovecot() as dovecot, HttpSink() as sink:
            mailbox = dovecot.add_user("seller")
            messages = sample_messages(datetime.now(UTC))
            for message in messages:
                mailbox.append(message)
            echo(f"Started a private Dovecot on 127.0.0.1:{dovecot.port} with {len(messages)} sample messages "
                 "(3 platform notices, 1 order mail, 1 newsletter).")
            (folder / "imap-password").write_text(mailbox.password)
            (folder / "channel-url").write_text(sink.url("/demo"))
            config_path = folder / "watcher.toml"
            config_path.write_text(CONFIG_TEMPLATE.format(port=dovecot.port, username=mailbox.username))
            config_path.chmod(0o600)
            engine = Engine(load_config(config_path))
            echo("\n$ watcher check")
            summary = check_account(engine, engine.config.accounts[0])
            with Store(engine.config.database) as store:
                delivered = deliver_due(engine, store)
            echo(f"{summary.account}: {sum(f.new for f in summary.folders)} new, "
                 f"{sum(f.fetched for f in summary.folders)} fetched after the header screen, "
                 f"{len(summary.events)} events; {delivered.sent} notifications sent"
                 + (f"; error: {summary.error}" if summary.error else ""))
            for request in sink.wait_for(delivered.notifications, timeout=10):
                echo("\n" + "─" * 78)
                echo(f"Notification received by the local json:// channel:\n\n{request.body['title']}\n")
                echo(request.body["message"])
            echo("\n" + "─" * 78)
            echo("\n$ watcher events list")
            from watcher.cli import events_table

            with Store(engine.config.database) as store:
                echo(events_table(store.events()))
            if keep:
                echo(f"\nThe demo config and database are in {folder}; try:\n"
                     f"  watcher --config {config_path} events show 1")
                echo("(the local Dovecot has stopped, so `check` will now fail to connect)")
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
