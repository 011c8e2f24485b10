"""The budgets' part of a turn (`bridge.turns`): what it is charged under, and the
refusal when a limit is reached. A base class of `bridge.turns.Turns`, and so of the
`Dispatcher`, whose state it uses."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bridge.budgets import Budgets, Charge, Exceeded, Limit, TurnBudget
from bridge.metrics import Metrics
from bridge.model import Conversation, InboxMessage, Reply

if TYPE_CHECKING:
    from bridge.backends.base import AgentBackend

log = logging.getLogger("bridge.dispatcher")


class TurnBudgets:
    budgets: Budgets
    metrics: Metrics
    _backends: dict[str, AgentBackend]

    def _budget(self, message: InboxMessage) -> TurnBudget:
        """What ``message``'s turn is charged under (`bridge.budgets`), once its
        conversation (and so its agent) is read."""

        def budget(conversation: Conversation) -> tuple[Charge, list[Limit]]:
            charge = self.budgets.charge(message, self._agent_of(message, conversation))
            return charge, self.budgets.limits(charge)

        return budget

    def _agent_of(self, message: InboxMessage, conversation: Conversation) -> str:
        return conversation.agent if conversation.agent in self._backends else message.agent

    def _over_budget(
        self, message: InboxMessage, conversation: Conversation, exceeded: Exceeded
    ) -> Reply:
        """The refusal of a message over a budget's limit; the agent is not called."""
        agent = self._agent_of(message, conversation)
        self.metrics.budget_refusals.labels(agent, exceeded.limit.name).inc()
        log.info(
            "message %d from %s:%s refused: %s reached (%d of %d)",
            message.id,
            message.key.platform,
            message.sender,
            exceeded.limit.name,
            exceeded.used,
            exceeded.limit.maximum,
        )
        return self.budgets.refusal(exceeded)
