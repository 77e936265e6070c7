"""The config file: the example loads, every problem is reported with its key path, secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from watcher.cli import cli
from watcher.config import load_config
from watcher.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """
[[accounts]]
name = "us-store"
host = "127.0.0.1"
port = 1143
security = "none"
username = "seller@example.test"
password_env = "WATCHER_TEST_PASSWORD"

[[channels]]
name = "hook"
url = "json://127.0.0.1:9/hook"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "watcher.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_example_config_loads_with_every_documented_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "us-store").write_text("imap-secret\n")
    (credentials / "ops-slack-url").write_text("slack://T1/B2/C3/#ops")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("WATCHER_OWNER_MAILTO", "mailtos://u:p@smtp.example.com?to=o@example.com")
    config = load_config(REPO / "config" / "watcher.example.toml")
    account = config.accounts[0]
    assert (account.name, account.store, account.port, account.security) == ("us-store", "Lotus Home", 993, "ssl")
    assert account.password.reveal() == "imap-secret"
    assert [channel.name for channel in config.channels] == ["ops-slack", "owner-email"]
    assert config.channels[1].min_severity == "high"
    assert config.database == (REPO / "config" / "events.db")
    assert config.poll_seconds == 120 and config.guidance_language == "auto"


def test_relative_database_path_resolves_against_the_config_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WATCHER_TEST_PASSWORD", "pw")
    config = load_config(write(tmp_path, '[storage]\ndatabase = "data/events.db"\n' + MINIMAL))
    assert config.database == tmp_path / "data" / "events.db"


def test_every_problem_is_reported_at_once_with_its_key_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WATCHER_TEST_PASSWORD", raising=False)
    text = MINIMAL.replace("port = 1143", 'port = "abc"').replace('security = "none"', 'security = "tls"')
    text += '\n[schedule]\npoll_seconds = 0\nspeed = 3\n'
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    problems = raised.value.problems
    assert "accounts[0].port: must be an integer, got 'abc'" in problems
    assert "accounts[0].security: must be one of ssl, starttls, none, got 'tls'" in problems
    assert "accounts[0].password_env: environment variable WATCHER_TEST_PASSWORD is not set" in problems
    assert "schedule.poll_seconds: must be at least 1, got 0" in problems
    assert "schedule.speed: unknown key" in problems
    assert raised.value.path.endswith("watcher.toml")


def test_plaintext_imap_is_refused_for_a_remote_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WATCHER_TEST_PASSWORD", "pw")
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, MINIMAL.replace('host = "127.0.0.1"', 'host = "imap.example.com"')))
    assert any(p.startswith("accounts[0].security: \"none\" sends the password in clear text") for p in raised.value.problems)


def test_a_secret_needs_exactly_one_source(tmp_path: Path) -> None:
    text = MINIMAL.replace('password_env = "WATCHER_TEST_PASSWORD"', 'password = "a"\npassword_file = "b"')
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    assert "accounts[0].password: give exactly one of password, password_file, password_env or password_credential" in raised.value.problems


def test_password_file_is_read_and_never_shown(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret-value\n")
    config = load_config(write(tmp_path, MINIMAL.replace('password_env = "WATCHER_TEST_PASSWORD"', 'password_file = "pw"')))
    account = config.accounts[0]
    assert account.password.reveal() == "s3cret-value"
    assert "s3cret-value" not in repr(account)


def test_a_world_readable_config_with_a_password_gets_a_warning(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('password_env = "WATCHER_TEST_PASSWORD"', 'password = "pw"'))
    path.chmod(0o644)
    assert any("other users can read it" in warning for warning in load_config(path).warnings)
    path.chmod(0o600)
    assert load_config(path).warnings == ()


def test_channel_filters_must_name_known_accounts_and_kinds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WATCHER_TEST_PASSWORD", "pw")
    text = MINIMAL + 'accounts = ["eu-store"]\nkinds = ["account_closed"]\nmin_severity = "urgent"\n'
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    assert "channels[0].accounts[0]: no account named 'eu-store'" in raised.value.problems
    assert any(p.startswith("channels[0].kinds[0]: unknown value 'account_closed'") for p in raised.value.problems)
    assert any(p.startswith("channels[0].min_severity: must be one of") for p in raised.value.problems)


def test_config_check_lists_problems_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("port = 1143", "port = 70000"))
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"], env={"WATCHER_TEST_PASSWORD": "pw"})
    assert result.exit_code == 2
    assert result.output == (f"Error: {path}: 1 problem\n  accounts[0].port: must be a port number 1-65535, got 70000\n")


def test_config_check_reports_ok(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"], env={"WATCHER_TEST_PASSWORD": "pw"})
    assert result.exit_code == 0, result.output
    assert result.output == f"{path}: OK — 1 accounts, 1 channels, database {tmp_path / 'events.db'}\n"


def test_broken_toml_is_one_clear_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[[accounts]\nname = ")
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "check"])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {path}: 1 problem\n  not valid TOML:")
    assert "Traceback" not in result.output


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "nope.toml"), "config", "check"])
    assert result.exit_code == 2
    assert result.output == f"Error: {tmp_path / 'nope.toml'}: 1 problem\n  file not found\n"


def test_duplicate_account_names_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WATCHER_TEST_PASSWORD", "pw")
    account = MINIMAL.split("[[channels]]")[0]
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, account + account))
    assert raised.value.problems == ["accounts[1].name: duplicate name 'us-store'"]


def test_a_channel_store_filter_must_name_a_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WATCHER_TEST_PASSWORD", "pw")
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, MINIMAL + 'stores = ["Lotus Home"]\n'))
    assert raised.value.problems == ["channels[0].stores[0]: no account belongs to a store named 'Lotus Home'"]
