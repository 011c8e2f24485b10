"""Profile the bridge (or the relay) under the throughput load with py-spy.

    .venv/bin/pip install py-spy
    python -m benchmarks.profile [--target bridge|relay] [--messages 2000] [--postgres]
        [--limit-off] [--raw /tmp/profile.txt] [--top 10]

Starts one session as ``python -m benchmarks`` does (fresh fakes, a scratch database),
attaches ``py-spy record --format raw`` to the process for the length of one burst,
and prints the top functions by own time and by inclusive time, in % of the samples
(idle threads excluded: py-spy samples only threads that are running).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks import scenarios
from benchmarks.databases import POSTGRES, SQLITE, scratch_database
from benchmarks.scenarios import BRIDGE, RELAY, open_session

#: Leaves that are waits, which py-spy's idle detection does not always recognize: the
#: event loop's epoll, aiosqlite's worker threads waiting for their next statement.
IDLE_LEAVES = (
    "EpollSelector.select (selectors.py",
    "_connection_worker_thread (aiosqlite/core.py:59)",
    "Condition.wait (threading.py",
    "Queue.get (queue.py",
)


def summarize(raw: str, top: int) -> str:
    """Top ``top`` frames by own and by inclusive samples, from py-spy's raw format
    (one ``frame;frame;...;leaf count`` line per distinct stack), waits excluded."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        if frames[-1].startswith(IDLE_LEAVES):
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples"
    out = [f"{total} busy samples ({idle} more in waits, left out)", "", "own time:", ""]
    out += [f"{i}. {n / total:6.1%}  {f}" for i, (f, n) in enumerate(own.most_common(top), 1)]
    out += ["", "own time by package:", ""]
    out += [f"- {n / total:6.1%}  {p}" for p, n in packages.most_common(top)]
    out += ["", "inclusive time (outside asyncio's loop and the entry points):", ""]
    skip = ("run_forever", "_run_once", "_run (asyncio", "<module>", "run (asyncio", "main (")
    shown = [(f, n) for f, n in inclusive.most_common() if not any(s in f for s in skip)]
    out += [f"{i}. {n / total:6.1%}  {f}" for i, (f, n) in enumerate(shown[:top], 1)]
    return "\n".join(out)


def _package(frame: str) -> str:
    """``f (sqlalchemy/sql/x.py:1)`` -> ``sqlalchemy``; ``f (bridge/turns.py:3)`` ->
    ``bridge/turns.py`` (the project's own modules one by one)."""
    where = frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]
    top, _, rest = where.partition("/")
    if top in ("bridge", "adapters", "storage", "benchmarks"):
        return where
    return top.removesuffix(".py") if rest else where.removesuffix(".py")


async def profile(args: argparse.Namespace, py_spy: str) -> str:
    """Run the load under py-spy; returns py-spy's stderr."""
    with tempfile.TemporaryDirectory(prefix="ab-profile-") as tmp:
        workdir = Path(tmp)
        async with scratch_database(POSTGRES if args.postgres else SQLITE, workdir) as url:
            session = await open_session(
                args.target, workdir, storage_url=url, limit_off=args.limit_off
            )
            raw = Path(args.raw)
            spy = await asyncio.create_subprocess_exec(
                py_spy,
                "record",
                "--pid",
                str(session.process.pid),
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--output",
                str(raw),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                result = await scenarios.burst(
                    session, args.messages, args.chats, within=args.messages / 10 + 60
                )
            finally:
                spy.send_signal(signal.SIGINT)
                _, err = await spy.communicate()
                await session.close()
    print(
        f"{args.target}: {result.throughput:.1f} msg/s, "
        f"{result.cpu_ms_per_message:.2f} ms CPU per message"
    )
    return err.decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--target", choices=(BRIDGE, RELAY), default=BRIDGE)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--postgres", action="store_true", help="the bridge on PostgreSQL")
    parser.add_argument("--limit-off", action="store_true", help="when the bridge has the key")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--raw", default="/tmp/profile.txt", help="py-spy's raw output")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 1
    err = asyncio.run(profile(args, py_spy))
    raw = Path(args.raw)
    if not raw.exists():
        print(f"py-spy wrote nothing: {err}", file=sys.stderr)
        return 1
    print(summarize(raw.read_text(), args.top))
    return 0


def main_summary(argv: list[str] | None = None) -> None:
    """Summarize an existing raw file: ``python -c 'from benchmarks.profile import
    main_summary; main_summary()' /tmp/profile.txt``."""
    args = (argv if argv is not None else sys.argv[1:]) or ["/tmp/profile.txt"]
    print(summarize(Path(args[0]).read_text(), int(args[1]) if len(args) > 1 else 10))


if __name__ == "__main__":
    raise SystemExit(main())
