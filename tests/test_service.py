"""The systemd unit verifies cleanly and stays hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, running_in_ci

UNIT = REPO_ROOT / "watcher.service"
INSTALLED_BINARY = "/opt/watcher/bin/watcher"
MAX_EXPOSURE = 2.5


@pytest.fixture
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        if running_in_ci():
            pytest.fail("CI=true but systemd-analyze is missing (Debian package systemd)")
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    return path


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart binary exists here, as `verify` requires."""
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text
    existing = shutil.which("true")
    assert existing is not None
    copy = tmp_path / "watcher.service"
    copy.write_text(text.replace(INSTALLED_BINARY, existing))
    return copy


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_unit_passes_systemd_analyze_verify_without_complaints(
    systemd_analyze: str, checkable_unit: Path
) -> None:
    result = run([systemd_analyze, "verify", f"./{checkable_unit.name}"], checkable_unit.parent)

    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if "watcher.service" in line
    ]
    assert (result.returncode, complaints) == (0, [])


def test_unit_exposure_level_is_at_most_two_and_a_half(
    systemd_analyze: str, checkable_unit: Path
) -> None:
    result = run(
        [systemd_analyze, "security", "--offline=true", f"./{checkable_unit.name}"],
        checkable_unit.parent,
    )

    found = re.search(r"Overall exposure level for watcher\.service: ([0-9.]+)", result.stdout)
    assert found is not None, result.stdout + result.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE


def test_unit_runs_the_documented_command_with_state_and_config_directories() -> None:
    directives = {
        line.partition("=")[0]: line.partition("=")[2]
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }

    assert directives["ExecStart"] == f"{INSTALLED_BINARY} run --config /etc/watcher/watcher.toml"
    assert directives["StateDirectory"] == "watcher"
    assert directives["ConfigurationDirectory"] == "watcher"
    assert directives["Restart"] == "on-failure"
