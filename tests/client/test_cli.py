"""The typer app through CliRunner, with the fake transport behind the real fan-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import FakeAgent, FakeTransport
from typer.testing import CliRunner, Result

from reloadctl import __version__
from reloadctl.client import cli
from reloadctl.client.settings import Settings
from reloadctl.errors import TargetAuthFailed
from reloadctl.proto.messages import ReloadRequest
from reloadctl.results import FAILED, RELOADED, UNCHANGED

A = "tcp://127.0.0.1:7001"
B = "tcp://127.0.0.1:7002"
C = "tcp://127.0.0.1:7003"  # nobody there: the fake says unreachable


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    return {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "RELOADCTL_HOST": None,
        "RELOADCTL_INVENTORY": None,
        "RELOADCTL_SECRET": None,
        "RELOADCTL_SECRET_FILE": None,
    }


@pytest.fixture
def fake() -> FakeTransport:
    return FakeTransport(
        {
            A: FakeAgent({"shop.pricing": RELOADED, "shop.cart": UNCHANGED}),
            B: FakeAgent({"shop.pricing": RELOADED}),
        }
    )


def cli_run(
    args: list[str], env: dict[str, str | None], transport: FakeTransport | None = None
) -> Result:
    """The app through CliRunner, with ``transport`` behind the real fan-out."""
    return CliRunner().invoke(cli.app, args, env=env, obj=Settings(transport=transport))


def invoke(
    args: list[str], env: dict[str, str | None], transport: FakeTransport
) -> tuple[int, list[dict[str, object]], str]:
    result = cli_run(args, env, transport)
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, records, result.stderr


def statuses(records: list[dict[str, object]]) -> dict[object, object]:
    assert "summary" in records[-1]
    return {r["target"]: r["status"] for r in records[:-1]}


def test_reload_ndjson_records_and_exit_0(fake: FakeTransport, env: dict[str, str | None]) -> None:
    code, records, _ = invoke(
        ["reload", "-H", A, "-H", B, "-o", "ndjson", "shop.pricing"], env, fake
    )
    assert code == 0
    # NDJSON streams in completion order: compare as a mapping.
    assert statuses(records) == {A: "reloaded", B: "reloaded"}
    assert records[-1] == {"summary": {"reloaded": 2}}
    assert set(records[0]) == {
        "target",
        "module",
        "status",
        "error",
        "duration_ms",
        "actions",
        "warnings",
    }
    (request,) = {c[1] for c in fake.calls}
    assert request == ReloadRequest(("shop.pricing",), deadline_s=30.0)


def test_global_options_before_the_command(fake: FakeTransport, env: dict[str, str | None]) -> None:
    result = cli_run(["-o", "json", "-q", "reload", "-H", A, "shop.pricing"], env, fake)
    assert result.exit_code == 0 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["summary"] == {"reloaded": 1}


def test_unreachable_target_is_partial_exit_3(
    fake: FakeTransport, env: dict[str, str | None]
) -> None:
    code, records, _ = invoke(
        ["reload", "-H", A, "-H", C, "-o", "ndjson", "shop.pricing"], env, fake
    )
    assert code == 3
    assert statuses(records) == {A: "reloaded", C: "unreachable"}


def test_typo_module_gets_a_line_and_counts_failed(
    fake: FakeTransport, env: dict[str, str | None]
) -> None:
    code, records, err = invoke(
        ["reload", "-H", A, "-H", B, "-o", "ndjson", "shop.pricnig"], env, fake
    )
    assert code == 1
    assert statuses(records) == {A: "not_loaded", B: "not_loaded"}
    assert "shop.pricnig: not loaded by any selected target" in err


def test_not_loaded_elsewhere_is_fine(fake: FakeTransport, env: dict[str, str | None]) -> None:
    code, records, err = invoke(
        ["reload", "-H", A, "-H", B, "-o", "ndjson", "shop.cart"], env, fake
    )
    assert code == 0
    assert statuses(records) == {A: "unchanged", B: "not_loaded"}
    assert "not loaded by any" not in err


def test_failed_module_everywhere_is_exit_1(env: dict[str, str | None]) -> None:
    transport = FakeTransport({A: FakeAgent({"m": FAILED})})
    code, records, _ = invoke(["reload", "-H", A, "-o", "ndjson", "m"], env, transport)
    assert code == 1
    assert records[0]["error"]["type"] == "SyntaxError"  # type: ignore[index]


def test_auth_failure_is_exit_4(env: dict[str, str | None]) -> None:
    transport = FakeTransport(
        {A: FakeAgent({"m": RELOADED}), B: FakeAgent(raises=TargetAuthFailed("wrong secret"))}
    )
    code, records, _ = invoke(["reload", "-H", A, "-H", B, "-o", "ndjson", "m"], env, transport)
    assert code == 4
    assert statuses(records)[B] == "auth_failed"


def test_hosts_from_env_comma_separated(fake: FakeTransport, env: dict[str, str | None]) -> None:
    env = {**env, "RELOADCTL_HOST": f"{A}, {B}"}
    code, records, _ = invoke(["reload", "-o", "ndjson", "shop.pricing"], env, fake)
    assert code == 0
    assert statuses(records) == {A: "reloaded", B: "reloaded"}


def test_duplicates_removed_order_kept(fake: FakeTransport, env: dict[str, str | None]) -> None:
    args = ["targets", "-H", B, "-H", f"{A},{B}", "-H", "127.0.0.1:7002", "-o", "ndjson"]
    code, records, _ = invoke(args, env, fake)
    assert code == 0
    assert [r["target"] for r in records] == [B, A]
    code, records, _ = invoke(["reload", *args[1:], "shop.pricing"], env, fake)
    assert code == 0 and len(records) == 3 and len(fake.calls) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reload", "m"], "no targets selected"),
        (["reload", "-H", "/not/an/address", "m"], "cannot parse address"),
        (["reload", "-g", "web", "m"], "unknown group 'web'"),
        (["reload", "-H", A, "--batch", "x", "m"], "--batch"),
        (["reload", "-H", A, "--max-failures", "-1", "m"], "--max-failures"),
        (["reload", "-H", A, "--pause", "m"], "--pause needs"),
        (["reload", "-H", A, "-P", "0", "m"], "parallel"),
        (["reload", "-H", A, "--verify", "app.health", "m"], "expected MODULE:FUNCTION"),
        (["reload", "-H", A, "--verify", ":check", "m"], "expected MODULE:FUNCTION"),
        (["reload", "-H", A, "--verify", "app.health:", "m"], "expected MODULE:FUNCTION"),
        (["reload", "-H", A], "Missing argument"),
        (["reload", "-H", A, "--secret", "s3cret", "m"], "No such option"),
        (["frobnicate"], "No such command"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, fake: FakeTransport, env: dict[str, str | None]
) -> None:
    result = cli_run(args, env, fake)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert fake.calls == []


def test_no_args_shows_help(env: dict[str, str | None]) -> None:
    result = cli_run([], env=env)
    assert result.exit_code == 2
    assert "Commands" in result.output


@pytest.mark.parametrize(
    "command", ["reload", "rollback", "ping", "status", "ps", "targets", "watch"]
)
def test_every_command_has_help_with_examples(command: str, env: dict[str, str | None]) -> None:
    result = cli_run([command, "--help"], env=env)
    assert result.exit_code == 0
    assert "Example" in result.stdout and f"reloadctl {command}" in result.stdout


def test_version(env: dict[str, str | None]) -> None:
    result = cli_run(["--version"], env=env)
    assert result.exit_code == 0 and result.stdout.strip() == f"reloadctl {__version__}"


def test_malformed_inventory_is_exit_1(tmp_path: Path, env: dict[str, str | None]) -> None:
    inv = tmp_path / "inv.toml"
    inv.write_text("[groups.web\n")
    result = cli_run(["reload", "--inventory", str(inv), "-g", "web", "m"], env=env)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "not valid TOML" in result.stderr


def test_bad_secret_file_is_exit_1_before_any_target(
    tmp_path: Path, fake: FakeTransport, env: dict[str, str | None]
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    result = cli_run(["reload", "-H", A, "--secret-file", str(secret), "m"], env, fake)
    assert result.exit_code == 1
    assert "chmod 600" in result.stderr
    assert fake.calls == []
    secret.chmod(0o600)
    result = cli_run(
        ["reload", "-H", A, "--secret-file", str(secret), "-o", "ndjson", "shop.pricing"],
        env,
        fake,
    )
    assert result.exit_code == 0
    assert fake.secrets[-1] is not None and "s3cret" not in repr(fake.secrets[-1])


def test_inventory_groups_and_group_secret(
    tmp_path: Path, fake: FakeTransport, env: dict[str, str | None]
) -> None:
    secret = tmp_path / "web.secret"
    secret.write_text("group-secret")
    secret.chmod(0o600)
    inv = tmp_path / "config" / "reloadctl" / "inventory.toml"
    inv.parent.mkdir(parents=True)
    inv.write_text(
        f"""
[groups.web]
secret_file = "{secret}"
labels = {{ role = "api" }}
targets = ["127.0.0.1:7002", {{ name = "a", address = "{A}" }}]
"""
    )
    code, records, _ = invoke(["reload", "-g", "web", "-o", "ndjson", "shop.pricing"], env, fake)
    assert code == 0
    assert set(statuses(records)) == {"127.0.0.1:7002", "a"}
    assert all(s is not None and s.reveal() == b"group-secret" for s in fake.secrets)  # type: ignore[attr-defined]
    result = cli_run(["targets", "-H", "a", "-o", "json"], env, fake)
    assert result.exit_code == 0
    (t,) = json.loads(result.stdout)["targets"]
    assert t == {
        "target": "a",
        "address": A,
        "group": "web",
        "labels": {"role": "api"},
        "problem": None,
    }


def test_status_table(fake: FakeTransport, env: dict[str, str | None]) -> None:
    result = cli_run(["status", "-H", A, "-H", C, "-o", "table"], env, fake)
    assert result.exit_code == 3
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["TARGET", "STATUS", "PID"]
    assert "4242" in lines[1] and "shop.pricing (2x, diverged from disk)" in lines[1]
    assert "unreachable" in lines[2]


def test_ping_ndjson(fake: FakeTransport, env: dict[str, str | None]) -> None:
    code, records, _ = invoke(["ping", "-H", A, "-H", B, "-o", "ndjson"], env, fake)
    assert code == 0
    assert statuses(records) == {A: "ok", B: "ok"}
    assert records[-1] == {"summary": {"ok": 2}}


def test_canary_abort_is_exit_5_with_rollback_command(env: dict[str, str | None]) -> None:
    addrs = [f"tcp://127.0.0.1:{7100 + i}" for i in range(5)]
    agents = {a: FakeAgent({"m": RELOADED}) for a in addrs}
    agents[addrs[1]] = FakeAgent({"m": FAILED})
    agents[addrs[2]] = FakeAgent({"m": FAILED})
    transport = FakeTransport(agents)
    args = ["reload", "-q", "-o", "ndjson", "--canary", "1", "--batch", "2", "--max-failures", "1"]
    for a in addrs:
        args += ["-H", a]
    code, records, err = invoke([*args, "m"], env, transport)
    assert code == 5
    assert statuses(records) == {
        addrs[0]: "reloaded",
        addrs[1]: "failed",
        addrs[2]: "failed",
        addrs[3]: "not_attempted",
        addrs[4]: "not_attempted",
    }
    # Shown even with -q: the rule that fired and how to undo.
    assert "--max-failures 1: 2 of 2 targets failed in batch 2" in err
    assert f"reloadctl rollback -H {addrs[0]} m" in err


def test_watch_without_watchfiles_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str | None]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "watchfiles" else real(name, *a),
    )
    result = cli_run(["watch", str(tmp_path), "-H", A], env=env)
    assert result.exit_code == 1
    assert "pip install 'reloadctl[watch]'" in result.stderr


def test_our_usage_errors_are_one_line(fake: FakeTransport, env: dict[str, str | None]) -> None:
    result = cli_run(["reload", "-g", "web", "m"], env, fake)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("reloadctl: error: unknown group 'web'")


def test_option_after_the_command_wins(fake: FakeTransport, env: dict[str, str | None]) -> None:
    args = ["-o", "json", "--timeout", "5", "reload", "-o", "ndjson", "-H", A, "shop.pricing"]
    code, records, _ = invoke(args, env, fake)
    assert code == 0
    assert records[-1] == {"summary": {"reloaded": 1}}  # ndjson, not one json document
    (_, _, connect_timeout, timeout) = fake.calls[0]
    assert (connect_timeout, timeout) == (2.0, 5.0)  # the global --timeout still applies


def test_verify_is_carried_by_each_reload_request(
    fake: FakeTransport, env: dict[str, str | None]
) -> None:
    args = ["reload", "-o", "ndjson", "-H", A, "-H", B, "--verify", "app.health:check"]
    code, _records, _ = invoke([*args, "shop.pricing"], env, fake)
    assert code == 0
    assert sorted(call[0] for call in fake.calls) == [A, B]
    assert {call[1].verify for call in fake.calls} == {"app.health:check"}  # type: ignore[attr-defined]
    fake.calls.clear()
    assert invoke(["reload", "-o", "ndjson", "-H", A, "shop.pricing"], env, fake)[0] == 0
    assert fake.calls[0][1].verify == ""  # type: ignore[attr-defined]


def test_canary_stops_a_typo_before_the_next_batch(env: dict[str, str | None]) -> None:
    addrs = [f"tcp://127.0.0.1:{7200 + i}" for i in range(4)]
    transport = FakeTransport({a: FakeAgent({"shop.pricing": RELOADED}) for a in addrs})
    args = ["reload", "-o", "ndjson", "--canary", "1", "--batch", "1"]
    for a in addrs:
        args += ["-H", a]
    code, records, err = invoke([*args, "shop.pricnig"], env, transport)
    assert code == 5
    assert len(transport.calls) == 1  # the canary only
    assert statuses(records) == {
        addrs[0]: "not_loaded",
        **{a: "not_attempted" for a in addrs[1:]},
    }
    assert "shop.pricnig: not loaded by any selected target (a typo?)" in err
    assert "aborted: shop.pricnig: not loaded by any canary target" in err
