"""``agent-bridge users ...`` as a person runs it: a subprocess, on a store whose
codes were handed out through the store's own API."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

from bridge.access import Access
from storage import Store
from tests.test_cli import run_cli


def write_config(tmp_path: Path) -> tuple[Path, str]:
    url = f"sqlite+aiosqlite:///{tmp_path}/bridge.db"
    config = tmp_path / "agent-bridge.toml"
    config.write_text(
        f'[storage]\nurl = "{url}"\n\n[agents.default]\nbackend = "echo"\n\n'
        '[telegram]\nbot_token = "1:fake"\napi_url = "http://127.0.0.1:9/bot"\n'
        "allowed_users = [42]\n"
    )
    return config, url


async def test_allow_list_deny_and_log(tmp_path: Path) -> None:
    config, url = write_config(tmp_path)
    args = ("--config", str(config))
    code, out, err = await run_cli("users", "allow", "slack:U0666", *args, cwd=tmp_path)
    assert code == 0 and out.strip() == "allowed slack:U0666", err
    async with Store(url) as store:
        pending = await Access(store).code_for("telegram", "7", name="@seven")

    code, out, err = await run_cli("users", "list", "--format", "json", *args, cwd=tmp_path)
    assert code == 0, err
    listed = json.loads(out)
    assert [(a["platform"], a["user"]) for a in listed["allowed"]] == [("slack", "U0666")]
    assert listed["allowed"][0]["added_by"] == f"cli:{getpass.getuser()}"
    assert [(c["code"], c["user"], c["name"]) for c in listed["codes"]] == [
        (pending, "7", "@seven")
    ]

    code, out, err = await run_cli("users", "deny", "slack:U0666", *args, cwd=tmp_path)
    assert code == 0 and "removed slack:U0666" in out, err
    # The config's allowlist still has 42: a deny says it cannot change that.
    code, out, err = await run_cli("users", "deny", "telegram:42", *args, cwd=tmp_path)
    assert code == 0, err
    assert "was not in the store's allowlist" in out
    assert "telegram.allowed_users still lets them in" in out

    code, out, err = await run_cli("users", "log", *args, cwd=tmp_path)
    assert [line.split()[2:4] for line in out.splitlines()] == [
        ["allow", "slack:U0666"],
        ["deny", "slack:U0666"],
        ["deny", "telegram:42"],
    ]


async def test_a_bad_person_or_code_is_an_error_naming_it(tmp_path: Path) -> None:
    config, _ = write_config(tmp_path)
    args = ("--config", str(config))
    code, _, err = await run_cli("users", "allow", "telegram:@bob", *args, cwd=tmp_path)
    assert code == 1 and "a Telegram user id is a number" in err
    code, _, err = await run_cli("users", "deny", "matrix:1", *args, cwd=tmp_path)
    assert code == 1 and "expected telegram:USER_ID or slack:USER_ID" in err
    code, _, err = await run_cli("users", "approve", "NOPE2345", *args, cwd=tmp_path)
    assert code == 1 and "unknown or already used code 'NOPE2345'" in err


async def test_approve_stands_when_the_person_cannot_be_told(tmp_path: Path) -> None:
    config, url = write_config(tmp_path)
    async with Store(url) as store:
        code = await Access(store).code_for("telegram", "7", name="@seven", chat="7")
    # Nothing listens at the configured api_url: the telling fails, the approval stands.
    status, out, err = await run_cli(
        "users", "approve", code, "--config", str(config), cwd=tmp_path
    )
    assert status == 0, err
    assert "approved telegram:7 (@seven)" in out and "the approval stands" in out
    assert "1:fake" not in out + err
    async with Store(url) as store:
        assert await Access(store).approved("telegram", "7")
