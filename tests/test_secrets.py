"""Secrets never appear in --help, error messages or command output."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from test_cli import commands

from watcher.cli import cli

PASSWORD = "hunter2-Secret-Password"
TOKEN = "T0kenPart9876543210"


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "watcher.toml"
    path.write_text(f'''
[[accounts]]
name = "us-store"
host = "127.0.0.1"
port = 1
security = "none"
username = "seller@example.test"
password = "{PASSWORD}"
{extra}

[[channels]]
name = "hook"
url = "json://user:{TOKEN}@127.0.0.1:1/hooks/{TOKEN}"
''')
    path.chmod(0o600)
    return path


def test_help_and_command_output_never_show_a_secret(tmp_path: Path) -> None:
    path = config(tmp_path)
    outputs = [CliRunner().invoke(cli, ["--config", str(path), *command, "--help"]).output for command in commands()]
    for args in (["check"], ["channels", "test"], ["status"], ["events", "list"], ["config", "check"]):
        outputs.append(CliRunner().invoke(cli, ["-vv", "--config", str(path), *args]).output)
    joined = "\n".join(outputs)
    assert "us-store: connect to 127.0.0.1:1 failed" in joined  # the commands really ran
    assert PASSWORD not in joined and TOKEN not in joined


def test_config_errors_never_echo_a_secret(tmp_path: Path) -> None:
    path = config(tmp_path, extra='password_env = "ALSO"\nlookback_days = "x"')
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 2
    assert "give exactly one of password" in result.output
    assert PASSWORD not in result.output and TOKEN not in result.output
