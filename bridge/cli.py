"""``agent-bridge``: the command line.

    agent-bridge chat [--agent NAME]     talk to the agent in the terminal
    agent-bridge run                     the daemon: every configured chat platform
    agent-bridge check [--offline]       validate the config, then check credentials live
    agent-bridge db upgrade              apply database migrations
    agent-bridge sessions list           conversations and their agent sessions
    agent-bridge sessions reset ...      give conversations a fresh agent session

Exit codes: 0 fine, 1 a runtime failure (store, platform), 2 a usage or
config error (one line per problem, naming the key).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO

from bridge import __version__
from bridge.config import (
    Config,
    PeakaAgentConfig,
    ThinnestAgentConfig,
    default_config,
    find_config_path,
    load_config,
)
from bridge.errors import BridgeError, ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config: {line}", file=sys.stderr)
        return EXIT_USAGE
    except BridgeError as exc:
        print(f"agent-bridge: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $AGENT_BRIDGE_CONFIG, else ./agent-bridge.toml)",
    )
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output"
    )

    parser = argparse.ArgumentParser(
        prog="agent-bridge",
        description="Talk to a hosted AI agent (thinnest.ai, Peaka) from Slack and Telegram.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"agent-bridge {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    chat = commands.add_parser(
        "chat",
        parents=[common],
        help="talk to the agent in this terminal",
        description="A terminal conversation through the same dispatcher and store as the "
        "chat platforms. /reset starts over, /quit (or Ctrl-D) leaves.",
    )
    chat.add_argument("--agent", metavar="NAME", default="default", help="which [agents.NAME]")
    chat.set_defaults(handler=_cmd_chat)

    run = commands.add_parser(
        "run",
        parents=[common],
        help="run the bridge (Slack, Telegram) until stopped",
        description="Start every configured chat adapter and answer messages until SIGTERM.",
    )
    run.set_defaults(handler=_cmd_run)

    check = commands.add_parser(
        "check",
        parents=[common],
        help="validate the config and check credentials",
        description="Validate the config and print each section's status; then check the "
        "database, the chat platforms' tokens and the agents' keys live.",
    )
    check.add_argument("--offline", action="store_true", help="only validate the config")
    check.set_defaults(handler=_cmd_check)

    db = commands.add_parser("db", parents=[common], help="database maintenance")
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND")
    upgrade = db_commands.add_parser(
        "upgrade", parents=[common], help="apply schema migrations (also done at every start)"
    )
    upgrade.set_defaults(handler=_cmd_db_upgrade)

    sessions = commands.add_parser(
        "sessions", parents=[common], help="list or reset conversations' agent sessions"
    )
    s_commands = sessions.add_subparsers(title="commands", metavar="COMMAND")
    s_list = s_commands.add_parser("list", parents=[common], help="list conversations")
    s_list.add_argument("--platform", help="only this platform (slack, telegram, console)")
    s_list.set_defaults(handler=_cmd_sessions_list)
    s_reset = s_commands.add_parser(
        "reset",
        parents=[common],
        help="give conversations a fresh agent session",
        description="Reset the agent session of the matching conversations: their next "
        "message starts a new session. Give --all, or at least --platform.",
    )
    s_reset.add_argument("--all", action="store_true", help="every conversation")
    s_reset.add_argument("--platform", help="slack, telegram or console")
    s_reset.add_argument("--chat", help="the chat (Slack channel id, Telegram chat id)")
    s_reset.add_argument("--thread", help="the thread (Slack thread ts, Telegram topic id)")
    s_reset.add_argument("--agent", help="only conversations with this agent")
    s_reset.set_defaults(handler=_cmd_sessions_reset)
    return parser


# --- helpers -----------------------------------------------------------------------------


def _load(args: argparse.Namespace, *, allow_default: bool = False) -> tuple[Config, Path | None]:
    path = find_config_path(getattr(args, "config", None), os.environ)
    if path is None:
        if allow_default:
            return default_config(), None
        raise ConfigError(
            [
                "no config file: pass --config PATH, set AGENT_BRIDGE_CONFIG, or create "
                "./agent-bridge.toml (see config.example.toml)"
            ]
        )
    return load_config(path, os.environ), path


def _setup_cli_logging(args: argparse.Namespace, default: int = logging.WARNING) -> None:
    verbose = getattr(args, "verbose", 0) or 0
    level = default if not verbose else (logging.INFO if verbose == 1 else logging.DEBUG)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # httpx logs every request URL at INFO; Telegram URLs contain the bot token.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


# --- commands ----------------------------------------------------------------------------


def _cmd_chat(args: argparse.Namespace) -> int:
    config, path = _load(args, allow_default=True)
    _setup_cli_logging(args)
    if args.agent not in config.agents:
        names = ", ".join(sorted(config.agents))
        raise ConfigError([f"--agent: no agent named {args.agent!r} (configured: {names})"])
    if path is None:
        print(
            "No config file found: chatting with the built-in echo agent. To use a real "
            "agent, copy config.example.toml to ./agent-bridge.toml (or pass --config).",
            file=sys.stderr,
        )
    return _run(_chat(config, args.agent, sys.stdin, sys.stdout))


async def _chat(config: Config, agent: str, stdin: TextIO, stdout: TextIO) -> int:
    from adapters.console import ConsoleAdapter
    from bridge.app import open_core

    async with open_core(config) as core:
        console = ConsoleAdapter(core.dispatcher, agent=agent, stdin=stdin, stdout=stdout)
        core.dispatcher.register(console)
        async with console:
            await core.dispatcher.resume()
            await console.converse()
            await core.dispatcher.wait_idle()
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    config, path = _load(args)
    from bridge import daemon

    return _run(daemon.run(config, config_path=path))


def _cmd_check(args: argparse.Namespace) -> int:
    config, path = _load(args)
    print(f"✓ config {path}")
    for line in describe_config(config):
        print(f"  {line}")
    if args.offline:
        return EXIT_OK
    _setup_cli_logging(args, default=logging.ERROR)
    from bridge.checks import live_checks

    results = asyncio.run(live_checks(config))
    for result in results:
        mark = "✓" if result.ok else "✗"
        print(f"{mark} {result.item}: {result.detail}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


def describe_config(config: Config) -> list[str]:
    """One line per section: what it configures, never a secret."""
    lines = [
        f"storage: {config.storage.display_url} (text kept {config.storage.retention_days:g} days)"
    ]
    for name, agent in config.agents.items():
        if isinstance(agent, ThinnestAgentConfig):
            where = f"agent {agent.agent_id} at {agent.base_url}"
        elif isinstance(agent, PeakaAgentConfig):
            where = f"project {agent.project_id} at {agent.effective_base_url}"
        else:
            where = "answers with the user's text"
        lines.append(f"agents.{name}: {agent.backend}, {where}, timeout {agent.timeout:g}s")
    lines.append(
        f"dispatcher: up to {config.dispatcher.max_concurrency} agent calls at once, "
        f"input up to {config.dispatcher.max_input_chars} characters"
    )
    if config.telegram is not None:
        tg = config.telegram
        lines.append(
            f"telegram: {tg.mode}, agent {tg.agent!r}, {len(tg.allowed_users)} allowed user "
            f"entr{'y' if len(tg.allowed_users) == 1 else 'ies'}, group trigger {tg.group_trigger}"
        )
    else:
        lines.append("telegram: not configured")
    if config.slack is not None:
        sl = config.slack
        lines.append(
            f"slack: {'Socket Mode' if sl.mode == 'socket' else 'HTTP ' + sl.listen + sl.path}, "
            f"agent {sl.agent!r}, thread follow-ups {'on' if sl.thread_followups else 'off'}"
        )
    else:
        lines.append("slack: not configured")
    daemon = config.daemon
    lines.append(
        f"daemon: health {'on ' + daemon.http_listen if daemon.http_listen else 'off'}, "
        f"grace {daemon.shutdown_grace:g}s, log {daemon.log_level}/{daemon.log_format}"
    )
    return lines


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    config, _ = _load(args, allow_default=True)
    _setup_cli_logging(args)

    async def upgrade() -> int:
        from storage.store import Store

        store = Store(config.storage.url)
        await store.open(migrate=False)
        try:
            await store.upgrade()
        finally:
            await store.close()
        print(f"database {config.storage.display_url} is up to date")
        return EXIT_OK

    return _run(upgrade())


def _cmd_sessions_list(args: argparse.Namespace) -> int:
    config, _ = _load(args, allow_default=True)
    _setup_cli_logging(args)

    async def listing() -> int:
        from storage.store import Store

        async with Store(config.storage.url) as store:
            conversations = await store.list_conversations(platform=args.platform)
        header = (
            "PLATFORM",
            "CHAT",
            "THREAD",
            "AGENT",
            "SESSION",
            "TURNS",
            "TOKENS",
            "LAST ACTIVE",
        )
        rows = [
            (
                c.key.platform,
                c.key.chat,
                c.key.thread or "-",
                c.agent,
                c.session_id or "-",
                str(c.turns),
                str(c.input_tokens + c.output_tokens),
                c.last_active_at.strftime("%Y-%m-%d %H:%M"),
            )
            for c in conversations
        ]
        if not rows:
            print("no conversations yet")
            return EXIT_OK
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return EXIT_OK

    return _run(listing())


def _cmd_sessions_reset(args: argparse.Namespace) -> int:
    if not args.all and not args.platform:
        print("sessions reset: give --all, or --platform (with --chat, --thread)", file=sys.stderr)
        return EXIT_USAGE
    config, _ = _load(args, allow_default=True)
    _setup_cli_logging(args)

    async def reset() -> int:
        from storage.store import Store

        async with Store(config.storage.url) as store:
            count = await store.reset_conversations(
                platform=args.platform, chat=args.chat, thread=args.thread, agent=args.agent
            )
        print(f"reset {count} conversation(s): their next message starts a new agent session")
        return EXIT_OK

    return _run(reset())
