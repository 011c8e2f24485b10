"""``python -m benchmarks --quick``: the end-to-end benchmark's smoke run.

The bridge (``agent-bridge run``) and the minimal relays each answer a small load from
the benchmark's fake Telegram, fake Slack (Socket Mode) and fake agent; the run exits 1
unless every message got exactly one reply with its echoed text. Takes about 30 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_quick_benchmark_answers_every_message_once() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert any(line.startswith("| measure | bridge SQLite | relay |") for line in lines)
    assert any(line.startswith("|---|") for line in lines)
    assert any(line.startswith("| throughput, default flood limit (msg/s) | ") for line in lines)
    # Slack (Socket Mode) runs the same loads against its own relay.
    slack = "| Slack: throughput, channel limit off (msg/s) | "
    assert any(line.startswith(slack) for line in lines)
    assert "every message got exactly one reply" in done.stdout
