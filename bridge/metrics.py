"""Prometheus metrics, in a registry of their own (one per `Metrics`), so that
tests and several bridges in one process do not collide on the global one.

Labels never carry secrets or message text: platform, agent name, error kind.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "agent_bridge_messages_received",
            "User messages accepted into the inbox.",
            ["platform"],
            registry=r,
        )
        self.answered = Counter(
            "agent_bridge_messages_answered",
            "Messages answered with the agent's reply.",
            ["platform"],
            registry=r,
        )
        self.refused = Counter(
            "agent_bridge_messages_refused",
            "Messages refused (access control, unsupported content, too long).",
            ["platform"],
            registry=r,
        )
        self.failed = Counter(
            "agent_bridge_messages_failed",
            "Messages answered with a friendly error instead of the agent's reply.",
            ["platform"],
            registry=r,
        )
        self.agent_latency = Histogram(
            "agent_bridge_agent_call_seconds",
            "Duration of one agent call, retries included.",
            ["agent"],
            buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.agent_errors = Counter(
            "agent_bridge_agent_errors",
            "Agent calls that failed, by error kind.",
            ["agent", "kind"],
            registry=r,
        )
        self.tokens = Counter(
            "agent_bridge_agent_tokens",
            "Tokens used, as reported by the agent.",
            ["agent", "direction"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "agent_bridge_queue_depth",
            "Conversations this instance is answering now (their leases).",
            registry=r,
        )
        self.in_flight = Gauge(
            "agent_bridge_agent_calls_in_flight",
            "Agent calls under way.",
            registry=r,
        )

        self.bad_updates = Counter(
            "agent_bridge_bad_updates",
            "Platform updates or events that could not be parsed and were skipped.",
            ["platform"],
            registry=r,
        )
        self.rejected_requests = Counter(
            "agent_bridge_rejected_requests",
            "HTTP requests refused before any processing (bad signature, wrong secret).",
            ["endpoint", "reason"],
            registry=r,
        )
        self.store_errors = Counter(
            "agent_bridge_store_errors",
            "Store operations that failed (each is retried; nothing is dropped).",
            registry=r,
        )
        self.unfinished = Gauge(
            "agent_bridge_unfinished_messages",
            "Messages in the inbox not yet answered and delivered (all instances).",
            registry=r,
        )
        self.oldest_unfinished = Gauge(
            "agent_bridge_oldest_unfinished_seconds",
            "Age of the oldest unfinished message (all instances); 0 when none.",
            registry=r,
        )
        self.leases_held = Gauge(
            "agent_bridge_leases_held",
            "Conversations this instance holds (is answering) right now.",
            registry=r,
        )
        self.takeovers = Counter(
            "agent_bridge_lease_takeovers",
            "Conversations taken over from an instance that stopped heartbeating.",
            registry=r,
        )
        self.feedback = Counter(
            "agent_bridge_feedback",
            "Feedback clicks on agent answers (good or bad), by the answering agent.",
            ["agent", "value"],
            registry=r,
        )
        self.parked_replies = Gauge(
            "agent_bridge_parked_replies",
            "Stored replies waiting to be posted again after the platform refused them.",
            registry=r,
        )
        self.budget_refusals = Counter(
            "agent_bridge_budget_refusals",
            "Messages refused without calling the agent: a budget's limit (the config key).",
            ["agent", "limit"],
            registry=r,
        )

        self.alerts_sent = Counter(
            "agent_bridge_alerts_sent",
            'Admin alerts sent ([alerts]), by problem kind; recovery messages as "recovery".',
            ["kind"],
            registry=r,
        )
        # Files, voice notes and images (bridge.files).
        self.attachments = Counter(
            "agent_bridge_attachments",
            "Attachments of messages, by kind and what became of them ("
            '"read", or why not: "too_large", "encrypted", "no_transcription"...).',
            ["platform", "kind", "outcome"],
            registry=r,
        )
        self.attachment_bytes = Counter(
            "agent_bridge_attachment_bytes",
            "Bytes of attachments downloaded.",
            ["platform"],
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
