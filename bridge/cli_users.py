"""``agent-bridge users approve CODE | list | allow PLATFORM:ID | deny PLATFORM:ID | log``:
the allowlist kept in the store (`bridge.access`), changed while the bridge runs.

A change is made in the database the config names, so every running instance
sees it at the person's next message. It is audited as ``cli:<OS user>``. An
approved person who asked in a Telegram private chat (or a Slack DM) is told so
there, with a plain Bot API / Web API call against the configured ``api_url``,
as ``agent-bridge check`` does, so the CLI imports no platform SDK; if that call
fails the approval stands and the CLI says so.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from collections.abc import Callable
from typing import Any

import httpx

from bridge.access import APPROVED_TEXT, Access, Approved, PendingCode, parse_person
from bridge.config import Config
from bridge.logs import redact

#: Seconds for telling an approved person.
TELL_TIMEOUT = 10.0


def add_parser(commands: Any, common: argparse.ArgumentParser, handler: Callable[..., int]) -> None:
    """Add ``users ...`` to ``commands``; ``handler`` runs each (it loads the config
    and calls `run`)."""
    users = commands.add_parser(
        "users",
        parents=[common],
        help="approve people, or list, allow and deny them (the allowlist kept in the store)",
    )
    users.set_defaults(help_parser=users)
    sub = users.add_subparsers(title="commands", metavar="COMMAND")
    approve = sub.add_parser(
        "approve",
        parents=[common],
        help="approve the person who was given CODE with their refusal",
        description="Add the person who was given CODE (valid 1 hour, once) to the store's "
        "allowlist; their next message is answered, on every instance.",
    )
    approve.add_argument("code", metavar="CODE")
    approve.set_defaults(handler=handler, users_action="approve")
    listing = sub.add_parser(
        "list", parents=[common], help="the store's allowlist and the codes still valid"
    )
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(handler=handler, users_action="list")
    for name, text in (
        ("allow", "add PLATFORM:ID (telegram:12345, slack:U0123ABCD) to the store's allowlist"),
        ("deny", "remove PLATFORM:ID from the store's allowlist (not from the config's)"),
    ):
        command = sub.add_parser(name, parents=[common], help=text, description=text)
        command.add_argument("person", metavar="PLATFORM:ID")
        command.set_defaults(handler=handler, users_action=name)
    log = sub.add_parser("log", parents=[common], help="every change of the store's allowlist")
    log.set_defaults(handler=handler, users_action="log")


def cli_actor() -> str:
    """Who runs the CLI, for the audit: ``cli:<OS user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no name for this uid (a bare container)
        return f"cli:uid{os.getuid()}"


async def run(config: Config, args: argparse.Namespace) -> int:
    """Carry out ``users <action>`` on the store the config names."""
    from storage.store import Store

    action: str = args.users_action
    async with Store(config.storage.url) as store:
        access = Access(store)
        if action == "approve":
            person = await access.approve(args.code, actor=cli_actor())
            print(f"approved {_who(person)}: their next message is answered")
            told = await tell(config, person)
            if told:
                print(told)
        elif action in ("allow", "deny"):
            platform, user = parse_person(args.person)
            if action == "allow":
                added = await access.allow(platform, user, actor=cli_actor())
                print(f"allowed {platform}:{user}" + ("" if added else " (already allowed)"))
            else:
                removed = await access.deny(platform, user, actor=cli_actor())
                print(
                    f"removed {platform}:{user} from the store's allowlist"
                    if removed
                    else f"{platform}:{user} was not in the store's allowlist"
                )
                if in_config(config, platform, user):
                    print(
                        f"note: the config's {platform}.allowed_users still lets them in; "
                        "edit it there (and reload) to refuse them"
                    )
        elif action == "list":
            allowed, codes = await access.listing()
            _print_list(allowed, codes, args.format)
        else:
            entries = await access.audit()
            if not entries:
                print("no changes yet")
            for e in entries:
                print(
                    f"{e.at:%Y-%m-%d %H:%M:%S}  {e.action:<7}  {e.platform}:{e.user_id}  {e.actor}"
                )
    return 0


def in_config(config: Config, platform: str, user: str) -> bool:
    """Whether the config's own allowlist lets this user in (a deny cannot change that)."""
    if platform == "telegram" and config.telegram is not None:
        users = config.telegram.allowed_users
        return "*" in users or int(user) in users
    if platform == "slack" and config.slack is not None:
        return "*" in config.slack.allowed_users or user in config.slack.allowed_users
    return False


async def tell(config: Config, person: Approved) -> str | None:
    """Tell an approved person where they asked (a Telegram private chat, a Slack
    DM); a line saying what happened, or None when there is nowhere to tell them."""
    if person.chat is None:
        return None
    if person.platform == "telegram" and config.telegram is not None:
        token = config.telegram.bot_token.get_secret_value()
        url = f"{config.telegram.api_url}{token}/sendMessage"
        request: dict[str, Any] = {"data": {"chat_id": person.chat, "text": APPROVED_TEXT}}
    elif person.platform == "slack" and config.slack is not None:
        base = config.slack.api_url.rstrip("/") + "/"
        token = config.slack.bot_token.get_secret_value()
        url = f"{base}chat.postMessage"
        request = {
            "json": {"channel": person.chat, "text": APPROVED_TEXT},
            "headers": {"Authorization": f"Bearer {token}"},
        }
    else:
        return None
    try:
        async with httpx.AsyncClient(timeout=TELL_TIMEOUT) as client:
            response = await client.post(url, **request)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return redact(f"could not tell them ({type(exc).__name__}); the approval stands")
    if isinstance(body, dict) and body.get("ok") is True:
        return f"told them in {person.platform} chat {person.chat}"
    reason = body.get("description") or body.get("error") if isinstance(body, dict) else None
    return redact(f"could not tell them ({reason or response.status_code}); the approval stands")


def _who(person: Approved) -> str:
    name = f" ({person.name})" if person.name else ""
    return f"{person.platform}:{person.user_id}{name}"


def _print_list(allowed: list[Approved], codes: list[PendingCode], fmt: str) -> None:
    if fmt == "json":
        out = {
            "allowed": [
                {
                    "platform": a.platform,
                    "user": a.user_id,
                    "name": a.name,
                    "added_by": a.added_by,
                    "added_at": a.added_at.isoformat(),
                }
                for a in allowed
            ],
            "codes": [
                {
                    "code": c.code,
                    "platform": c.platform,
                    "user": c.user_id,
                    "name": c.name,
                    "expires_at": c.expires_at.isoformat(),
                }
                for c in codes
            ],
        }
        print(json.dumps(out, indent=2))
        return
    if not allowed:
        print("no one in the store's allowlist (the config's allowlists are not shown)")
    for a in allowed:
        when = f"{a.added_at:%Y-%m-%d %H:%M}"
        print(f"{a.platform}:{a.user_id}  {a.name or '-'}  by {a.added_by}  {when}")
    if codes:
        print("\ncodes waiting for approval:")
        for c in codes:
            who = f"{c.platform}:{c.user_id} {c.name}".rstrip()
            print(f"{c.code}  {who}  until {c.expires_at:%Y-%m-%d %H:%M} UTC")
