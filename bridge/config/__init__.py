"""Configuration: read once at start, validated, typed and frozen, passed down.

The file is TOML (see ``config.example.toml`` for every key). Before
validation two things are resolved, in this order:

- ``${VAR}`` in any string is replaced by the environment variable ``VAR``;
- every secret key ``X`` may instead be given as ``X_file``, a path whose
  contents (trailing newline stripped) become the value. This is how systemd
  credentials (``LoadCredential=``) reach the bridge.

Every problem is reported at once, one line each, naming the key::

    agents.default.backend: expected one of "thinnest", "peaka", "openai", "http", "echo"
    agents.default.api_key: environment variable THINNEST_API_KEY is not set
    slack.alowed_users: unknown key; did you mean "allowed_users"?
    slack.allowed_channels[0]: "general" is a name, not a channel id (C..., G... or D...)

"At once" includes the checks across keys (an agent a platform names must
exist, webhook mode needs a URL): they run on every key that validated, the
keys that did not at their defaults, so fixing one error never reveals the next.

Secrets are `pydantic.SecretStr`: their repr is ``SecretStr('**********')``
and no error message ever includes a value.

Example::

    config = load_config(Path("agent-bridge.toml"), os.environ)
    config.agents["default"].timeout   # 120.0
"""

from bridge.config.agent_http import HttpAgentConfig
from bridge.config.agent_openai import OpenAIAgentConfig
from bridge.config.agents import (
    AGENT_MODELS,
    BACKENDS,
    AgentConfig,
    EchoAgentConfig,
    PeakaAgentConfig,
    ThinnestAgentConfig,
)
from bridge.config.alerts import AlertsConfig
from bridge.config.budgets import AgentCapConfig, BudgetsConfig
from bridge.config.fields import (
    DEFAULT_CONFIG_NAME,
    DEFAULT_STORAGE_URL,
    ENV_CONFIG,
    PEAKA_ZONES,
    SECRET_KEYS,
    TELEGRAM_API_URL,
    AgentBase,
    HttpUrl,
    Section,
    SlackChannel,
    SlackTeam,
    SlackUser,
    TelegramUser,
    split_listen,
)
from bridge.config.loading import default_config, find_config_path, load_config, parse_config
from bridge.config.sections import (
    Config,
    DaemonConfig,
    DispatcherConfig,
    FilesConfig,
    MessagesConfig,
    SlackConfig,
    StorageConfig,
    TelegramConfig,
    TranscriptionConfig,
)
from bridge.config.writing import SecretRef, Sections, check_sections, to_toml
from bridge.errors import ConfigError  # raised by the loaders; re-exported for callers

__all__ = [
    "AGENT_MODELS",
    "BACKENDS",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_STORAGE_URL",
    "ENV_CONFIG",
    "PEAKA_ZONES",
    "SECRET_KEYS",
    "TELEGRAM_API_URL",
    "AgentBase",
    "AgentCapConfig",
    "AgentConfig",
    "AlertsConfig",
    "BudgetsConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "DispatcherConfig",
    "EchoAgentConfig",
    "FilesConfig",
    "HttpAgentConfig",
    "HttpUrl",
    "MessagesConfig",
    "OpenAIAgentConfig",
    "PeakaAgentConfig",
    "SecretRef",
    "Section",
    "Sections",
    "SlackChannel",
    "SlackConfig",
    "SlackTeam",
    "SlackUser",
    "StorageConfig",
    "TelegramConfig",
    "TelegramUser",
    "ThinnestAgentConfig",
    "TranscriptionConfig",
    "check_sections",
    "default_config",
    "find_config_path",
    "load_config",
    "parse_config",
    "split_listen",
    "to_toml",
]
