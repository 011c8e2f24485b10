"""Writing a config file (``agent-bridge init``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.config.loading import parse_config


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where the bridge reads a secret from, never the secret itself: written as
    ``key = "${VAR}"`` (``env``) or ``key_file = "/path"`` (``file``).

    Example::

        to_toml({"agents.default": {"backend": "thinnest", "agent_id": "ag_1",
                                    "api_key": SecretRef(env="THINNEST_API_KEY")}})
    """

    env: str | None = None
    file: str | None = None


#: Sections for `to_toml`: ``{"agents.default": {"backend": "echo"}, ...}``.
Sections = Mapping[str, Mapping[str, Any]]


def to_toml(sections: Sections, *, header: str = "") -> str:
    """A config file's text: one ``[section]`` per entry, in order."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, values in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, SecretRef):
                if value.file is not None:
                    lines.append(f"{key}_file = {_toml_value(value.file)}")
                else:
                    lines.append(f'{key} = "${{{value.env}}}"')
            else:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string: same quotes, same escapes.
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def check_sections(sections: Sections, *, base_dir: Path) -> None:
    """Validate sections before they are written, every `SecretRef` taken as set
    (the variables and files may not exist yet); `ConfigError` names the keys."""
    raw: dict[str, Any] = {}
    for name, values in sections.items():
        node = raw
        for part in name.split("."):
            node = node.setdefault(part, {})
        for key, value in values.items():
            # Any value passes for a secret, except webhook_secret's character rule.
            node[key] = "placeholder" if isinstance(value, SecretRef) else value
    parse_config(raw, base_dir=base_dir, environ={})
