"""The benchmark's one Markdown table: rows of medians, a column per setup, and the
ratio bridge/relay."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.processes import REPO
from benchmarks.scenarios import median

RELAY_COLUMN = "relay"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    #: Formats one value.
    fmt: Callable[[float], str]


def _f(digits: int) -> Callable[[float], str]:
    return lambda v: f"{v:,.{digits}f}"


def rows(conversations: int, agent_latency: float, soak_minutes: float, rate: float) -> list[Row]:
    crowd = f"{conversations:,} conversations, {agent_latency:g} s agent"
    return [
        Row("tput_default", "throughput, default flood limit (msg/s)", _f(1)),
        Row("tput_off", "throughput, flood limit off (msg/s)", _f(1)),
        Row("cpu", "CPU per message (ms)", _f(2)),
        Row("in_p50", f"added latency inbound p50 at {rate:g} msg/s (ms)", _f(1)),
        Row("in_p99", f"added latency inbound p99 at {rate:g} msg/s (ms)", _f(1)),
        Row("out_p50", f"added latency outbound p50 at {rate:g} msg/s (ms)", _f(1)),
        Row("out_p99", f"added latency outbound p99 at {rate:g} msg/s (ms)", _f(1)),
        Row("slack_tput_default", "Slack: throughput, default channel limit (msg/s)", _f(1)),
        Row("slack_tput_off", "Slack: throughput, channel limit off (msg/s)", _f(1)),
        Row("slack_cpu", "Slack: CPU per message (ms)", _f(2)),
        Row("slack_in_p50", f"Slack: added latency inbound p50 at {rate:g} msg/s (ms)", _f(1)),
        Row("slack_in_p99", f"Slack: added latency inbound p99 at {rate:g} msg/s (ms)", _f(1)),
        Row("slack_out_p50", f"Slack: added latency outbound p50 at {rate:g} msg/s (ms)", _f(1)),
        Row("slack_out_p99", f"Slack: added latency outbound p99 at {rate:g} msg/s (ms)", _f(1)),
        Row("crowd_wall", f"{crowd}: wall time (s)", _f(1)),
        Row("crowd_rss", f"{crowd}: peak RSS (MiB)", _f(1)),
        Row("ready_new", "start to READY, new database (s)", _f(2)),
        Row("ready_existing", "start to READY, existing database (s)", _f(2)),
        Row("import_cli", "import bridge.cli (ms; relay: benchmarks.relay)", _f(0)),
        Row("import_run", "import bridge.cli + adapters.telegram (ms)", _f(0)),
        Row("soak_growth", f"RSS growth over a {soak_minutes:g} min soak (MiB)", _f(1)),
    ]


@dataclass
class Results:
    """Samples per (row key, column): a column is a storage name or `RELAY_COLUMN`."""

    storages: list[str]
    samples: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))
    #: Rows shown as "n/a" in the bridge's columns, with why (in the notes).
    unavailable: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, column: str, value: float) -> None:
        self.samples[(key, column)].append(value)

    def value(self, key: str, column: str) -> float | None:
        values = self.samples.get((key, column))
        return median(values) if values else None


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"Linux {platform.release()}, {now}"
    )


def revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"
    return out.stdout.strip() or "unknown revision"


def table(results: Results, shown: list[Row], *, title: str, notes: list[str]) -> str:
    columns = [*(f"bridge {s}" for s in results.storages), RELAY_COLUMN]
    columns += [f"bridge/relay {s}" for s in results.storages]
    out = [f"### {title}", "", "| measure | " + " | ".join(columns) + " |"]
    out.append("|---|" + "---:|" * len(columns))
    for row in shown:
        relay = results.value(row.key, RELAY_COLUMN)
        cells: list[str] = []
        ratios: list[str] = []
        for storage in results.storages:
            value = results.value(row.key, storage)
            if row.key in results.unavailable or value is None:
                cells.append("n/a")
                ratios.append("n/a")
                continue
            cells.append(row.fmt(value))
            ratios.append(f"{value / relay:.2f}" if relay else "n/a")
        cells.append(row.fmt(relay) if relay is not None else "n/a")
        out.append(f"| {row.label} | " + " | ".join([*cells, *ratios]) + " |")
    if notes:
        out.append("")
        out.extend(f"- {note}" for note in notes)
    return "\n".join(out)
