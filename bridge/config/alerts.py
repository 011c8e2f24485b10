"""``[alerts]``: where the bridge tells its administrators about a problem
(`bridge.alerts`).

Example::

    [alerts]
    telegram_chat = -1001234567890   # a chat the Telegram bot is in
    slack_channel = "C0123ABCD"      # a channel the Slack app is in
    repeat_after = 3600              # seconds between two alerts of one problem

Alerts go out through the running Telegram or Slack adapter, so a destination
needs its platform's section (`alerts_problems` checks it, naming the key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from bridge.config.fields import Section, id_check

#: A channel id only: an alert goes to one place, not to "*" or every DM.
AlertChannel = Annotated[
    str, AfterValidator(id_check("channel", r"[CGD][A-Z0-9]+", "C..., G... or D..."))
]


class AlertsConfig(Section):
    #: The numeric id of the Telegram chat (a group, or an admin's private chat)
    #: that receives the alerts; the bot must be a member.
    telegram_chat: int | None = None
    #: The id of the Slack channel that receives the alerts; the app must be in it.
    slack_channel: AlertChannel | None = None
    #: Seconds before the same problem (kind and agent) is announced again.
    repeat_after: float = Field(3600, gt=0)
    #: Seconds the bridge must stay unhealthy (the /healthz problems: a platform
    #: disconnected, work stuck) before it is announced as degraded.
    degraded_after: float = Field(300, gt=0)

    @model_validator(mode="after")
    def _somewhere(self) -> AlertsConfig:
        if self.telegram_chat is None and self.slack_channel is None:
            raise ValueError("set telegram_chat or slack_channel (or both), or remove [alerts]")
        return self


def alerts_problems(raw: Mapping[str, Any]) -> list[str]:
    """The checks across sections, on the raw (resolved) config: a destination
    needs its platform configured, since the alert goes through that adapter."""
    alerts = raw.get("alerts")
    if not isinstance(alerts, Mapping):
        return []
    problems: list[str] = []
    for key, section, name in (
        ("telegram_chat", "telegram", "Telegram"),
        ("slack_channel", "slack", "Slack"),
    ):
        if alerts.get(key) is not None and not isinstance(raw.get(section), Mapping):
            problems.append(
                f"alerts.{key}: alerts to {name} are sent by the bridge's {name} "
                f"connection: configure [{section}] too, or remove alerts.{key}"
            )
    return problems
