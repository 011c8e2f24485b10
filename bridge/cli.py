"""``agent-bridge``: the command line.

    agent-bridge init [flags]            write a minimal config (asks on a terminal)
    agent-bridge chat [--agent NAME]     talk to the agent in the terminal
    agent-bridge run                     the daemon: every configured chat platform
    agent-bridge check [--offline]       validate the config, then check credentials live
    agent-bridge check --probe AGENT     send one real message to AGENT (spends a turn)
    agent-bridge db upgrade              apply database migrations
    agent-bridge sessions list           conversations and their agent sessions
    agent-bridge sessions reset ...      give conversations a fresh agent session
    agent-bridge feedback list [--since] feedback given on agent answers
    agent-bridge users approve CODE      approve a refused person (also list|allow|deny|log)
    agent-bridge usage [--since] [--by]  messages and tokens used (per day, user, chat, agent)

Exit codes: 0 fine, 1 a runtime failure (store, platform), 2 a usage or
config error (one line per problem, naming the key).

``-v`` (INFO) and ``-vv`` (DEBUG) work with every command; for ``run`` they
raise ``[daemon] log_level`` (never lower it).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO

from bridge import __version__, cli_feedback, cli_usage, cli_users
from bridge.config import (
    BACKENDS,
    DEFAULT_CONFIG_NAME,
    DEFAULT_STORAGE_URL,
    Config,
    SecretRef,
    check_sections,
    default_config,
    find_config_path,
    load_config,
    to_toml,
)
from bridge.errors import BridgeError, ConfigError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PLATFORMS = ("slack", "telegram", "console")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        # `agent-bridge sessions` alone: the help of `sessions`, not of everything.
        helped: argparse.ArgumentParser = getattr(args, "help_parser", parser)
        helped.print_help(sys.stderr)
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

    _init_parser(commands, common)

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
    check.add_argument(
        "--probe",
        metavar="AGENT",
        help="send one real message to this agent and show the answer, session, usage "
        "and time (the only check that spends a turn)",
    )
    check.add_argument(
        "--text", dest="probe_text", metavar="TEXT", help='what --probe sends (default "ping")'
    )
    check.set_defaults(handler=_cmd_check)

    db = commands.add_parser("db", parents=[common], help="database maintenance")
    db.set_defaults(help_parser=db)
    db_commands = db.add_subparsers(title="commands", metavar="COMMAND")
    upgrade = db_commands.add_parser(
        "upgrade", parents=[common], help="apply schema migrations (also done at every start)"
    )
    upgrade.set_defaults(handler=_cmd_db_upgrade)

    sessions = commands.add_parser(
        "sessions", parents=[common], help="list or reset conversations' agent sessions"
    )
    sessions.set_defaults(help_parser=sessions)
    s_commands = sessions.add_subparsers(title="commands", metavar="COMMAND")
    s_list = s_commands.add_parser("list", parents=[common], help="list conversations")
    s_list.add_argument("--platform", choices=PLATFORMS, help="only this platform")
    s_list.set_defaults(handler=_cmd_sessions_list)
    s_reset = s_commands.add_parser(
        "reset",
        parents=[common],
        help="give conversations a fresh agent session",
        description="Reset the agent session of the matching conversations: their next "
        "message starts a new session. Give --all, or at least --platform.",
    )
    s_reset.add_argument("--all", action="store_true", help="every conversation")
    s_reset.add_argument("--platform", choices=PLATFORMS, help="only this platform")
    s_reset.add_argument("--chat", help="the chat (Slack channel id, Telegram chat id)")
    s_reset.add_argument("--thread", help="the thread (Slack thread ts, Telegram topic id)")
    s_reset.add_argument("--agent", help="only conversations with this agent")
    s_reset.set_defaults(handler=_cmd_sessions_reset)
    cli_feedback.add_parser(commands, common, _cmd_feedback_list)
    cli_users.add_parser(commands, common, _cmd_users)
    cli_usage.add_parser(commands, common, _cmd_usage)
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


def _verbosity(args: argparse.Namespace) -> int:
    count: int = getattr(args, "verbose", 0) or 0
    return count


def _setup_cli_logging(args: argparse.Namespace, default: int = logging.WARNING) -> None:
    verbose = _verbosity(args)
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

    return _run(daemon.run(with_verbosity(config, _verbosity(args)), config_path=path))


def with_verbosity(config: Config, verbose: int) -> Config:
    """``config`` with ``[daemon] log_level`` raised to INFO (``-v``) or DEBUG
    (``-vv``); a level already more verbose is kept."""
    if not verbose:
        return config
    wanted = "info" if verbose == 1 else "debug"
    current = config.daemon.log_level
    if _LOG_LEVELS.index(current) <= _LOG_LEVELS.index(wanted):
        return config
    return config.model_copy(
        update={"daemon": config.daemon.model_copy(update={"log_level": wanted})}
    )


def _cmd_check(args: argparse.Namespace) -> int:
    _setup_cli_logging(args, default=logging.ERROR)
    config, path = _load(args)
    from bridge.cli_check import run_check

    return run_check(
        config, path, offline=args.offline, probe=args.probe, probe_text=args.probe_text
    )


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


def _cmd_feedback_list(args: argparse.Namespace) -> int:
    config, _ = _load(args, allow_default=True)
    _setup_cli_logging(args)
    return _run(cli_feedback.run_list(config.storage.url, args.since, args.format))


def _cmd_users(args: argparse.Namespace) -> int:
    config, _ = _load(args, allow_default=True)
    _setup_cli_logging(args)
    return _run(cli_users.run(config, args))


def _cmd_usage(args: argparse.Namespace) -> int:
    config, _ = _load(args, allow_default=True)
    _setup_cli_logging(args)
    return _run(cli_usage.run_usage(config.storage.url, args.since, args.by, args.format))


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


# --- init --------------------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFAULT_KEY_ENV = {"thinnest": "THINNEST_API_KEY", "peaka": "PEAKA_API_KEY"}


def _init_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    init = commands.add_parser(
        "init",
        parents=[common],
        help="write a minimal working config (asks, or takes flags)",
        description="Write a minimal config: one agent and the chat platforms you choose. "
        "On a terminal it asks for what the flags do not give; otherwise the flags must "
        "say it all. Secrets are never written: the file names the environment variable "
        "(${VAR}) or the file (X_file) that holds each. Then it checks the file as "
        "`check --offline` does. config.example.toml documents every other key.",
        epilog="example: agent-bridge init --backend thinnest --agent-id ag_123 "
        "--api-key-env THINNEST_API_KEY --telegram --telegram-users 123456789",
    )
    init.add_argument(
        "--path", metavar="PATH", help=f"where to write it (default: ./{DEFAULT_CONFIG_NAME})"
    )
    init.add_argument("--force", action="store_true", help="replace the file if it exists")
    init.add_argument("--no-check", action="store_true", help="write the file without checking it")
    agent = init.add_argument_group("the agent ([agents.default])")
    agent.add_argument(
        "--backend",
        choices=INIT_BACKENDS,
        help="echo answers with your text (openai and http agents: edit the file, see README)",
    )
    agent.add_argument("--agent-id", metavar="ID", help="thinnest: the agent's id (ag_...)")
    agent.add_argument("--project-id", metavar="ID", help="peaka: the project's id")
    agent.add_argument("--zone", choices=("us", "eu"), help="peaka: the project's zone (us)")
    agent.add_argument("--base-url", metavar="URL", help="the agent API, if not the default")
    _secret_flags(agent, "api-key", "the agent's API key", "THINNEST_API_KEY or PEAKA_API_KEY")
    telegram = init.add_argument_group("Telegram ([telegram]; any of these turns it on)")
    telegram.add_argument("--telegram", action="store_true", help="answer on Telegram")
    _secret_flags(telegram, "telegram-token", "the bot token", "TELEGRAM_BOT_TOKEN")
    telegram.add_argument(
        "--telegram-users",
        metavar="LIST",
        help='who may talk to the bot: numeric user ids or @usernames, comma-separated; "*" '
        "for anyone",
    )
    slack = init.add_argument_group("Slack ([slack], Socket Mode; any of these turns it on)")
    slack.add_argument("--slack", action="store_true", help="answer on Slack")
    _secret_flags(slack, "slack-bot-token", "the bot token (xoxb-...)", "SLACK_BOT_TOKEN")
    _secret_flags(slack, "slack-app-token", "the app-level token (xapp-...)", "SLACK_APP_TOKEN")
    slack.add_argument(
        "--slack-users", metavar="LIST", help='user ids (U...), comma-separated, or "*" (default)'
    )
    slack.add_argument(
        "--slack-channels",
        metavar="LIST",
        help='channel ids (C..., G...), "im" for DMs, comma-separated, or "*" (default)',
    )
    init.set_defaults(handler=_cmd_init)


def _secret_flags(group: Any, stem: str, what: str, default: str) -> None:
    either = group.add_mutually_exclusive_group()
    either.add_argument(
        f"--{stem}-env",
        metavar="VAR",
        help=f"the environment variable that will hold {what} (default {default})",
    )
    either.add_argument(f"--{stem}-file", metavar="PATH", help=f"or a file that holds {what}")


class _Prompter:
    """Questions on a terminal; each answer is checked before the next question."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.stdin, self.stdout = stdin, stdout

    def ask(
        self,
        question: str,
        *,
        default: str | None = None,
        check: Callable[[str], str | None] | None = None,
    ) -> str:
        while True:
            shown = f" [{default}]" if default else ""
            self.stdout.write(f"{question}{shown}: ")
            self.stdout.flush()
            line = self.stdin.readline()
            if not line:
                self.stdout.write("\nnothing written\n")
                raise KeyboardInterrupt  # Ctrl-D: leave, writing nothing
            answer = line.strip() or (default or "")
            problem = "an answer is needed" if not answer else (check(answer) if check else None)
            if problem is None:
                return answer
            self.stdout.write(f"  {problem}\n")

    def confirm(self, question: str) -> bool:
        def yes_no(answer: str) -> str | None:
            return None if answer.lower() in ("y", "yes", "n", "no") else "answer y or n"

        return self.ask(f"{question} (y/n)", default="n", check=yes_no).lower() in ("y", "yes")


class _InitAnswers:
    """The values for `init`: from the flags, else asked (on a terminal), else a
    problem naming the flag. Every missing flag is reported at once."""

    def __init__(self, args: argparse.Namespace, prompter: _Prompter | None) -> None:
        self.args, self.prompter = args, prompter
        self.problems: list[str] = []

    def value(
        self,
        flag: str,
        question: str,
        *,
        default: str | None = None,
        check: Callable[[str], str | None] | None = None,
    ) -> str:
        given: str | None = getattr(self.args, flag.removeprefix("--").replace("-", "_"))
        if given is not None:
            problem = check(given) if check else None
            if problem:
                self.problems.append(f"{flag}: {problem}")
            return given
        if self.prompter is not None:
            return self.prompter.ask(question, default=default, check=check)
        if default is None:
            self.problems.append(f"{flag}: required (or run init on a terminal to be asked)")
            return ""
        return default

    def secret(self, stem: str, what: str, default_env: str) -> SecretRef:
        env: str | None = getattr(self.args, f"{stem}_env")
        file: str | None = getattr(self.args, f"{stem}_file")
        flag = f"--{stem.replace('_', '-')}-env"
        if file is not None:
            return _file_ref(file)
        if env is None and self.prompter is not None:
            answer = self.prompter.ask(
                f"{what}: the environment variable that will hold it, or a file path (with a /)",
                default=default_env,
                check=lambda a: None if "/" in a else _env_problem(a),
            )
            return _file_ref(answer) if "/" in answer else SecretRef(env=answer)
        name = env or default_env
        problem = _env_problem(name)
        if problem:
            self.problems.append(f"{flag}: {problem}")
        return SecretRef(env=name)

    def not_for(self, backend: str, *flags: str) -> None:
        for flag in flags:
            if getattr(self.args, flag.removeprefix("--").replace("-", "_")) is not None:
                self.problems.append(f"{flag}: not used by --backend {backend}")


def _file_ref(text: str) -> SecretRef:
    # The path was typed relative to here; the config's would be relative to its folder.
    if "${" in text or Path(text).is_absolute():
        return SecretRef(file=text)
    return SecretRef(file=str(Path(text).expanduser().resolve()))


def _env_problem(name: str) -> str | None:
    if _ENV_NAME.fullmatch(name):
        return None
    return f"{name!r} is not an environment variable name (letters, digits and _)"


#: The backends `init` asks about; openai and http agents take more keys than a
#: wizard should ask (README, "Bridging other agents", has a config for each).
INIT_BACKENDS = ("thinnest", "peaka", "echo")


def _backend_problem(answer: str) -> str | None:
    if answer in INIT_BACKENDS:
        return None
    extra = (
        " (openai and http agents: see README, Bridging other agents)" if answer in BACKENDS else ""
    )
    return "choose " + ", ".join(INIT_BACKENDS) + extra


def _list(text: str) -> list[str]:
    return [item for item in re.split(r"[,\s]+", text) if item]


def _telegram_users(text: str) -> list[int | str]:
    return [int(u) if re.fullmatch(r"-?\d+", u) else u for u in _list(text)]


def _init_sections(answers: _InitAnswers) -> dict[str, dict[str, Any]]:
    args, prompter = answers.args, answers.prompter
    sections: dict[str, dict[str, Any]] = {"storage": {"url": DEFAULT_STORAGE_URL}}
    backend = answers.value(
        "--backend",
        "Agent backend (thinnest, peaka or echo)",
        default="thinnest" if prompter else None,
        check=_backend_problem,
    )
    agent: dict[str, Any] = {"backend": backend or "echo"}
    if backend == "thinnest":
        agent["agent_id"] = answers.value("--agent-id", "thinnest.ai agent id (ag_...)")
        answers.not_for(backend, "--project-id", "--zone")
    elif backend == "peaka":
        agent["project_id"] = answers.value("--project-id", "Peaka project id")
        agent["zone"] = answers.value(
            "--zone",
            "Peaka zone (us or eu)",
            default="us",
            check=lambda z: None if z in ("us", "eu") else "choose us or eu",
        )
        answers.not_for(backend, "--agent-id")
    elif backend == "echo":
        answers.not_for(
            backend, "--agent-id", "--project-id", "--zone", "--api-key-env", "--api-key-file"
        )
    if args.base_url is not None:
        agent["base_url"] = args.base_url
    if backend in _DEFAULT_KEY_ENV:
        agent["api_key"] = answers.secret("api_key", "Agent API key", _DEFAULT_KEY_ENV[backend])
    sections["agents.default"] = agent

    wants_telegram = args.telegram or any(
        getattr(args, f) is not None
        for f in ("telegram_token_env", "telegram_token_file", "telegram_users")
    )
    wants_slack = args.slack or any(
        getattr(args, f) is not None
        for f in (
            "slack_bot_token_env",
            "slack_bot_token_file",
            "slack_app_token_env",
            "slack_app_token_file",
            "slack_users",
            "slack_channels",
        )
    )
    if prompter is not None and not wants_telegram and not wants_slack:
        wants_telegram = prompter.confirm("Answer on Telegram?")
        wants_slack = prompter.confirm("Answer on Slack?")
    if wants_telegram:
        token = answers.secret("telegram_token", "Telegram bot token", "TELEGRAM_BOT_TOKEN")
        users = answers.value(
            "--telegram-users",
            "Telegram users who may talk to the bot (numeric ids or @usernames, comma-"
            'separated; "*" for anyone)',
        )
        sections["telegram"] = {
            "bot_token": token,
            "agent": "default",
            "allowed_users": _telegram_users(users),
        }
    if wants_slack:
        bot = answers.secret("slack_bot_token", "Slack bot token (xoxb-...)", "SLACK_BOT_TOKEN")
        app = answers.secret("slack_app_token", "Slack app token (xapp-...)", "SLACK_APP_TOKEN")
        users = answers.value("--slack-users", 'Slack user ids allowed (U..., or "*")', default="*")
        channels = answers.value(
            "--slack-channels",
            'Slack channel ids allowed (C..., "im" for DMs, or "*")',
            default="*",
        )
        sections["slack"] = {
            "bot_token": bot,
            "app_token": app,
            "agent": "default",
            "allowed_channels": _list(channels),
            "allowed_users": _list(users),
        }
    return sections


def _cmd_init(args: argparse.Namespace) -> int:
    _setup_cli_logging(args)
    path = Path(args.path or getattr(args, "config", None) or DEFAULT_CONFIG_NAME).expanduser()
    if path.exists() and not args.force:
        print(f"init: {path} exists; pass --force to replace it", file=sys.stderr)
        return EXIT_USAGE
    prompter = _Prompter(sys.stdin, sys.stdout) if sys.stdin.isatty() else None
    answers = _InitAnswers(args, prompter)
    sections = _init_sections(answers)
    if answers.problems:
        for line in answers.problems:
            print(f"init: {line}", file=sys.stderr)
        return EXIT_USAGE
    # Nothing is written unless it validates (secrets taken as set: they may come later).
    check_sections(sections, base_dir=path.parent.resolve())
    refs = [
        v for section in sections.values() for v in section.values() if isinstance(v, SecretRef)
    ]
    variables = [ref.env for ref in refs if ref.env is not None]
    header = "agent-bridge config, written by `agent-bridge init`; config.example.toml "
    header += "documents every key.\nSecrets are not in this file: "
    header += (
        "export " + ", ".join(variables) + ' (or use X_file = "/path").' if variables else "none."
    )
    text = to_toml(sections, header=header)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w" if args.force else "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        print(f"init: {path} exists; pass --force to replace it", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"init: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {path}")
    if args.no_check:
        return EXIT_OK
    return _check_written(path)


def _check_written(path: Path) -> int:
    """``check --offline`` on a file `init` wrote. Unset variables and missing
    secret files are things to do before the bridge can start, not failures of
    init: listed, exit 0. Anything else (there should be nothing) is exit 2."""
    try:
        config = load_config(path, os.environ)
    except ConfigError as exc:
        pending = re.compile(r"environment variable \S+ is not set$|_file: cannot read ")
        print(f"! config {path} is written; before agent-bridge can use it:")
        for line in exc.problems:
            print(f"  {line}")
        if all(pending.search(line) for line in exc.problems):
            return EXIT_OK
        return EXIT_USAGE
    from bridge.cli_check import print_config

    print_config(config, path)
    where = "" if path == Path(DEFAULT_CONFIG_NAME) else f" --config {path}"
    print(f"next: agent-bridge chat{where}   (then agent-bridge check{where} for the live checks)")
    return EXIT_OK
