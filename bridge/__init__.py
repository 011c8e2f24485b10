"""agent-bridge: talk to a hosted AI agent from Slack and Telegram."""

__version__ = "0.1.0"
