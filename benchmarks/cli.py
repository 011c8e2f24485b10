"""``python -m benchmarks``: ``agent-bridge run`` against a minimal relay, end to end.

Both run as subprocesses against the same fakes (Telegram Bot API, Slack Web API with
Socket Mode, and a thinnest.ai agent on 127.0.0.1, in this process) under the same
loads, interleaved (bridge, relay, bridge, relay...), and one Markdown table of medians
goes to stdout. Progress goes to stderr. ``--quick`` is the smoke test CI runs: a small
load, and exit 1 unless every message was answered exactly once. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks import scenarios
from benchmarks.databases import POSTGRES, SQLITE, postgres_version, scratch_database
from benchmarks.processes import BenchError, import_seconds
from benchmarks.report import RELAY_COLUMN, Results, machine, revision, rows, table
from benchmarks.scenarios import BRIDGE, RELAY, Session, open_session, percentile

SOAK_COLUMNS = ("sqlite", "postgresql", "relay")
PHASES = ("throughput", "latency", "slack", "crowd", "import", "soak")
#: The pace of the latency load, and of the soak.
PACE = 20.0
SOAK_PACE = 10.0
CROWD_LATENCY = 2.0


@dataclass(frozen=True)
class Options:
    runs: int
    messages: int
    chats: int
    paced_messages: int
    conversations: int
    crowd_runs: int
    agent_latency: float
    soak: float
    postgres: bool
    phases: frozenset[str]
    quick: bool
    #: The columns the soak runs in (each takes --soak minutes): sqlite, postgresql, relay.
    soak_on: frozenset[str] = frozenset(SOAK_COLUMNS)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="agent-bridge against a minimal relay, end to end; one Markdown table.",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per measure (medians)")
    parser.add_argument("--messages", type=int, default=500, help="messages of the throughput load")
    parser.add_argument(
        "--chats", type=int, default=50, help="chats the throughput and latency loads use"
    )
    parser.add_argument(
        "--paced-messages",
        type=int,
        default=200,
        help=f"messages of the latency load, at {PACE:g} msg/s",
    )
    parser.add_argument(
        "--conversations",
        type=int,
        default=5000,
        help=f"conversations of the crowd load (one message each, a {CROWD_LATENCY:g} s agent)",
    )
    parser.add_argument(
        "--crowd-runs",
        type=int,
        default=None,
        help="runs of the crowd load (default: --runs; it is the slow one)",
    )
    parser.add_argument(
        "--agent-latency",
        type=float,
        default=0.0,
        help="seconds the fake agent takes in the throughput and latency loads",
    )
    parser.add_argument(
        "--soak", type=float, default=0.0, metavar="MINUTES", help="RSS over a soak (off: 0)"
    )
    parser.add_argument(
        "--soak-on",
        default=",".join(SOAK_COLUMNS),
        metavar="COLUMN[,COLUMN]",
        help=f"where the soak runs, each for --soak minutes: {', '.join(SOAK_COLUMNS)}",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--only",
        default="",
        metavar="PHASE[,PHASE]",
        help=f"run only these: {', '.join(PHASES)} (startup comes with throughput/latency)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 50 messages over 10 chats, one run, SQLite; exit 1 unless every "
        "message was answered exactly once",
    )
    args = parser.parse_args(argv)
    phases = {p.strip() for p in args.only.split(",") if p.strip()} or set(PHASES) - {"soak"}
    unknown = phases - set(PHASES)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {PHASES}")
    if args.soak > 0:
        phases.add("soak")
    soak_on = {c.strip().lower() for c in args.soak_on.split(",") if c.strip()}
    if not soak_on or soak_on - set(SOAK_COLUMNS):
        parser.error(f"--soak-on: choose from {', '.join(SOAK_COLUMNS)}")
    if args.quick:
        return Options(
            runs=1,
            messages=50,
            chats=10,
            paced_messages=20,
            conversations=0,
            crowd_runs=0,
            agent_latency=args.agent_latency,
            soak=0.0,
            postgres=False,
            phases=frozenset({"throughput", "latency", "slack"}),
            quick=True,
        )
    if min(args.runs, args.messages, args.chats, args.paced_messages) < 1:
        parser.error("--runs, --messages, --chats and --paced-messages must be at least 1")
    return Options(
        runs=args.runs,
        messages=args.messages,
        chats=args.chats,
        paced_messages=args.paced_messages,
        conversations=args.conversations,
        crowd_runs=args.runs if args.crowd_runs is None else args.crowd_runs,
        agent_latency=args.agent_latency,
        soak=args.soak,
        postgres=not args.no_postgres,
        phases=frozenset(phases),
        quick=False,
        soak_on=frozenset(soak_on),
    )


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, options: Options, workdir: Path, storages: list[str]) -> None:
        self.o = options
        self.workdir = workdir
        self.results = Results(storages)
        self.limit = scenarios.limit_setting()
        if self.limit is None:
            self.results.unavailable["tput_off"] = "no key"

    async def session(
        self,
        system: str,
        column: str,
        load: Callable[[Session], Awaitable[None]],
        *,
        platform: str = scenarios.TELEGRAM,
        url: str = "",
        latency: float = 0.0,
        limit_off: bool = False,
        ready_key: str | None = None,
    ) -> None:
        """One process: start (READY time under ``ready_key``), ``load``, stop, check."""
        session = await open_session(
            system,
            self.workdir,
            platform=platform,
            storage_url=url,
            agent_latency=latency,
            limit_off=limit_off,
        )
        try:
            if ready_key is not None:
                self.results.add(ready_key, column, session.startup)
            await load(session)
        except BaseException:
            await session.close(check=False)
            raise
        await session.close()
        progress(
            f"{system} ({column}, {platform}): {len(session.sent)} messages, each answered once"
        )

    async def run(self) -> Results:
        o = self.o
        for run in range(o.runs):
            progress(f"run {run + 1} of {o.runs}")
            if "import" in o.phases:
                await self.imports()
            for storage in self.results.storages:
                async with scratch_database(storage, self.workdir) as url:
                    await self.one_storage(storage, url, with_crowd=run < o.crowd_runs)
            if "soak" in o.phases and run == 0:
                await self.soak()
        return self.results

    async def imports(self) -> None:
        statements = {
            "import_cli": ("import bridge.cli", "import benchmarks.relay"),
            "import_run": ("import bridge.cli, adapters.telegram", "import benchmarks.relay"),
        }
        for key, (bridge, relay) in statements.items():
            seconds = await import_seconds(bridge)
            for storage in self.results.storages:
                self.results.add(key, storage, seconds * 1000)
            self.results.add(key, RELAY_COLUMN, await import_seconds(relay) * 1000)

    async def one_storage(self, storage: str, url: str, *, with_crowd: bool) -> None:
        o = self.o
        if "throughput" in o.phases or "latency" in o.phases:
            await self.loads(storage, url, scenarios.TELEGRAM)
        if "slack" in o.phases:
            await self.loads(storage, url, scenarios.SLACK)
        if with_crowd and "crowd" in o.phases and o.conversations > 0:
            await self.crowd(storage, url)

    async def loads(self, storage: str, url: str, platform: str) -> None:
        """The throughput loads (flood limit on and off) and the paced latency load on
        ``platform``; Telegram's rows have no prefix (and carry the start-up times),
        Slack's are ``slack_...``."""
        o, results = self.o, self.results
        telegram = platform == scenarios.TELEGRAM
        prefix = "" if telegram else "slack_"
        phases = o.phases if telegram else {"throughput", "latency"}

        async def throughput(key: str, column: str, session: Session) -> None:
            within = o.messages / 10 + 60
            burst = await scenarios.burst(session, o.messages, o.chats, within=within)
            results.add(prefix + key, column, burst.throughput)
            if key == "tput_default":
                results.add(prefix + "cpu", column, burst.cpu_ms_per_message)
                results.add(prefix + "fakes_cpu", column, burst.fakes_cpu_ms_per_message)
            progress(f"  {session.system} ({platform}): {burst.throughput:.1f} msg/s")

        async def latency(column: str, session: Session) -> None:
            within = o.paced_messages / PACE + 60
            lat = await scenarios.paced(session, o.paced_messages, PACE, o.chats, within=within)
            for name, values in (("in", lat.inbound), ("out", lat.outbound)):
                results.add(f"{prefix}{name}_p50", column, percentile(values, 50) * 1000)
                results.add(f"{prefix}{name}_p99", column, percentile(values, 99) * 1000)

        db_exists = False
        if "throughput" in phases:
            await self.session(
                BRIDGE,
                storage,
                lambda s: throughput("tput_default", storage, s),
                platform=platform,
                url=url,
                latency=o.agent_latency,
                ready_key="ready_new" if telegram else None,
            )
            db_exists = True

            async def relay_throughput(s: Session) -> None:
                await throughput("tput_default", RELAY_COLUMN, s)
                # The relay has no flood limiter: the same figure is its "limit off".
                last = results.samples[(prefix + "tput_default", RELAY_COLUMN)][-1]
                results.add(prefix + "tput_off", RELAY_COLUMN, last)

            await self.session(
                RELAY,
                RELAY_COLUMN,
                relay_throughput,
                platform=platform,
                latency=o.agent_latency,
                ready_key="ready_new" if telegram else None,
            )
            if self.limit is not None or not telegram:
                await self.session(
                    BRIDGE,
                    storage,
                    lambda s: throughput("tput_off", storage, s),
                    platform=platform,
                    url=url,
                    latency=o.agent_latency,
                    limit_off=True,
                )
        if "latency" in phases:
            existing = "ready_existing" if db_exists else "ready_new"
            await self.session(
                BRIDGE,
                storage,
                lambda s: latency(storage, s),
                platform=platform,
                url=url,
                latency=o.agent_latency,
                ready_key=existing if telegram else None,
            )
            await self.session(
                RELAY,
                RELAY_COLUMN,
                lambda s: latency(RELAY_COLUMN, s),
                platform=platform,
                latency=o.agent_latency,
                ready_key="ready_existing" if telegram else None,
            )

    async def crowd(self, storage: str, url: str) -> None:
        o, results = self.o, self.results

        async def load(column: str, session: Session) -> None:
            within = o.conversations / 5 + 120
            result = await scenarios.crowd(session, o.conversations, within=within)
            results.add("crowd_wall", column, result.wall)
            results.add("crowd_rss", column, result.peak_rss_kib / 1024)
            progress(f"  {session.system}: {result.wall:.1f} s")

        await self.session(
            BRIDGE, storage, lambda s: load(storage, s), url=url, latency=CROWD_LATENCY
        )
        await self.session(
            RELAY, RELAY_COLUMN, lambda s: load(RELAY_COLUMN, s), latency=CROWD_LATENCY
        )

    async def soak(self) -> None:
        minutes = self.o.soak

        def load(column: str) -> Callable[[Session], Awaitable[None]]:
            async def go(session: Session) -> None:
                samples = await scenarios.soak(session, minutes, SOAK_PACE, self.o.chats)
                self.results.add("soak_growth", column, (samples[-1] - samples[0]) / 1024)
                mib = ", ".join(f"{s / 1024:.0f}" for s in samples)
                progress(f"  {session.system} ({column}) RSS samples, MiB: {mib}")

            return go

        for storage in self.results.storages:
            if storage.lower() in self.o.soak_on:
                async with scratch_database(storage, self.workdir) as url:
                    await self.session(BRIDGE, storage, load(storage), url=url)
        if RELAY_COLUMN in self.o.soak_on:
            await self.session(RELAY, RELAY_COLUMN, load(RELAY_COLUMN))


async def main_async(options: Options) -> int:
    storages = [SQLITE]
    notes: list[str] = []
    pg_version = await postgres_version() if options.postgres else None
    if pg_version is not None:
        storages.append(POSTGRES)
    elif options.postgres:
        notes.append("PostgreSQL: none answers on 127.0.0.1:5432, so SQLite only")
    with tempfile.TemporaryDirectory(prefix="ab-bench-") as tmp:
        bench = Bench(options, Path(tmp), storages)
        try:
            results = await bench.run()
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    shown = [
        r
        for r in rows(options.conversations, CROWD_LATENCY, options.soak, PACE)
        if any(key[0] == r.key for key in results.samples)
    ]
    o = options
    params = (
        f"{'quick run' if o.quick else f'medians of {o.runs} runs'}; throughput: "
        f"{o.messages} messages over {o.chats} chats at once, agent latency "
        f"{o.agent_latency:g} s; latency: {o.paced_messages} messages at {PACE:g} msg/s"
    )
    if "crowd" in o.phases and o.conversations:
        params += (
            f"; crowd: {o.conversations:,} chats with one message each, "
            f"medians of {min(o.crowd_runs, o.runs)} runs"
        )
    notes.insert(0, params)
    if pg_version is not None:
        notes.append(f"PostgreSQL {pg_version} on 127.0.0.1, a scratch database per run")
    if bench.limit is None:
        notes.append(
            "flood limit off: n/a, this bridge has no key for it (planned: "
            "telegram.max_messages_per_second, 0 = off); the relay has no limiter"
        )
    else:
        notes.append(f"flood limit off: telegram.{bench.limit[0]} = {bench.limit[1]}")
    fakes = [
        f"{column} {value:.2f}"
        for column in [*storages, RELAY_COLUMN]
        if (value := results.value("fakes_cpu", column)) is not None
    ]
    if fakes:
        notes.append(
            "the fakes' own CPU per message in the throughput load (ms; this process, "
            f"both fakes and the load): {', '.join(fakes)}"
        )
    if "slack" in o.phases:
        notes.append(
            "Slack: Socket Mode, the same loads in direct messages (one DM channel per chat); "
            "its relay is benchmarks/relay_slack.py; flood limit off: "
            "slack.channel_messages_per_second = 0"
        )
    if o.quick:
        notes.append("quick: every message got exactly one reply with its echoed text")
    notes.append(
        f"the relay: httpx, at most {scenarios.bridge_max_concurrency()} agent calls in flight "
        "(the bridge's default dispatcher.max_concurrency), no store, no flood limiter"
    )
    notes.append(
        "added latency: inbound = update offered to getUpdates -> agent call received; "
        "outbound = agent answered -> sendMessage received"
    )
    title = f"agent-bridge {revision()} vs a minimal relay: {machine()}"
    print(table(results, shown, title=title, notes=notes))
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))
