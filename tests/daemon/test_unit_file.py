"""deploy/agent-bridge.service: `systemd-analyze verify` accepts it, and it keeps
the settings the daemon relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import DaemonConfig
from bridge.daemon import EXIT_CONFIG, EXIT_REJECTED

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "agent-bridge.service"
EXEC_START = (
    "/opt/agent-bridge/venv/bin/agent-bridge run --config /etc/agent-bridge/agent-bridge.toml"
)


def settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (Debian/Ubuntu package: systemd)",
)
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists and is executable; the real one lives
    # under /opt after deployment. Point it at this interpreter running the same command.
    text = UNIT.read_text()
    assert f"ExecStart={EXEC_START}" in text
    local = text.replace(
        "ExecStart=/opt/agent-bridge/venv/bin/agent-bridge run",
        f"ExecStart={sys.executable} -m bridge run",
    )
    unit = tmp_path / "agent-bridge.service"
    unit.write_text(local)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    # verify also warns (exit 0) about unknown or misplaced keys: those count as failures.
    complaints = [line for line in result.stderr.splitlines() if "agent-bridge.service" in line]
    assert result.returncode == 0, result.stderr
    assert complaints == [], result.stderr


def test_unit_keeps_what_the_daemon_relies_on() -> None:
    unit = settings(UNIT.read_text())
    assert unit["Type"] == ["notify"]
    assert unit["NotifyAccess"] == ["main"]
    assert seconds(unit["WatchdogSec"][0]) > 0
    # The stop timeout must leave room for the grace period plus closing.
    assert seconds(unit["TimeoutStopSec"][0]) >= DaemonConfig().shutdown_grace + 10
    assert unit["Restart"] == ["on-failure"]
    # A config error and a refused token do not fix themselves: no restart loop.
    assert unit["RestartPreventExitStatus"] == [f"{EXIT_CONFIG} {EXIT_REJECTED}"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # SIGHUP: the daemon reloads
    assert unit["StateDirectory"] == ["agent-bridge"]
    assert unit["ConfigurationDirectory"] == ["agent-bridge"]
    assert unit["DynamicUser"] == ["yes"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert unit[key] == ["yes"], key
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert all(
        value.split(":", 1)[1].startswith("/etc/agent-bridge/credentials/")
        for value in unit["LoadCredential"]
    )
