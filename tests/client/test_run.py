"""``client.run`` without typer: values in, records out, an exit code back; the transport
is a parameter (the fake from fakes.py behind the real fan-out, rollout and renderer)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from fakes import FakeAgent, FakeTransport

from reloadctl.client import run
from reloadctl.client.settings import REMOTE_PARALLEL, Choice, Output, Settings
from reloadctl.client.targets import Target
from reloadctl.errors import ConfigError, UsageError
from reloadctl.proto.messages import ReloadRequest
from reloadctl.results import FAILED, RELOADED

TS = [Target(f"t{i}", f"tcp://127.0.0.1:{7300 + i}") for i in range(3)]
NDJSON = Settings(output=Output.ndjson)


def go(
    transport: FakeTransport, request: ReloadRequest, **kw: object
) -> tuple[int, list[dict[str, object]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = run.run_request(
        NDJSON,
        TS,
        request,
        kind="modules",
        secret_for=lambda t: None,
        transport=transport,
        out=out,
        err=err,
        **kw,  # type: ignore[arg-type]
    )
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_records_and_exit_code_through_the_given_transport() -> None:
    fake = FakeTransport({t.address: FakeAgent({"m": RELOADED}) for t in TS})
    code, records, err = go(fake, ReloadRequest(("m",)))
    assert code == 0 and len(fake.calls) == 3
    assert records[-1] == {"summary": {"reloaded": 3}}
    assert err.splitlines()[-1].startswith("3 targets in ")


def test_a_typo_gets_its_line_and_exit_1() -> None:
    fake = FakeTransport({t.address: FakeAgent({"m": RELOADED}) for t in TS})
    code, _, err = go(fake, ReloadRequest(("mm",)))
    assert code == 1
    assert "reloadctl: mm: not loaded by any selected target (a typo?); counted as failed" in err


def test_an_aborted_rollout_prints_the_rollback_command(tmp_path: Path) -> None:
    agents = {t.address: FakeAgent({"m": RELOADED}) for t in TS}
    agents[TS[1].address] = FakeAgent({"m": FAILED})
    plan = run.rollout_plan(
        canary=0,
        batch="1",
        max_failures="0",
        fail_fast=False,
        ignore_unreachable=False,
        pause=False,
    )
    code, records, err = go(FakeTransport(agents), ReloadRequest(("m",)), plan=plan, prefix=["-q"])
    assert code == 5
    assert [r.get("status") for r in records[:-1]] == ["reloaded", "failed", "not_attempted"]
    assert f"reloadctl -q rollback -H {TS[0].address} m" in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch": "x"}, "--batch"),
        ({"max_failures": "-1"}, "--max-failures"),
        ({"pause": True}, "--pause needs"),
        ({"canary": -1}, "--canary"),
    ],
)
def test_bad_rollout_options_are_usage_errors(options: dict[str, object], message: str) -> None:
    given: dict[str, object] = {
        "canary": 0,
        "batch": None,
        "max_failures": None,
        "fail_fast": False,
        "ignore_unreachable": False,
        "pause": False,
        **options,
    }
    with pytest.raises(UsageError, match=message):
        run.rollout_plan(**given)  # type: ignore[arg-type]


def test_no_rollout_option_means_no_plan() -> None:
    none = run.rollout_plan(
        canary=0,
        batch=None,
        max_failures=None,
        fail_fast=False,
        ignore_unreachable=False,
        pause=False,
    )
    assert none is None


def test_selection_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("RELOADCTL_HOST", raising=False)
    with pytest.raises(UsageError, match="no targets selected"):
        run.select(Settings(), Choice())
    with pytest.raises(UsageError, match="cannot parse address"):
        run.select(Settings(), Choice(hosts=("/not/an/address",)))
    with pytest.raises(ConfigError, match="no live reloadctl agent") as caught:
        run.select(Settings(), Choice(local=True))
    assert not isinstance(caught.value, UsageError)  # a local problem: exit 1, not 2
    with pytest.raises(UsageError, match="parallel"):
        run.fanout_options(Settings(parallel=0))


def test_the_default_pool_follows_the_targets() -> None:
    local = run.fanout_options(Settings()).parallel
    assert local <= 32
    unix = [Target("u", "unix:///run/u/a.sock")]
    assert run.fanout_options(Settings(), unix).parallel == local
    assert run.fanout_options(Settings(), [*unix, *TS]).parallel == REMOTE_PARALLEL
    assert run.fanout_options(Settings(parallel=3), TS).parallel == 3  # -P wins


@pytest.mark.parametrize(
    ("given", "carried"),
    [(None, ""), ("app.health:check", "app.health:check"), ("m:Cls.method", "m:Cls.method")],
)
def test_verify_spec(given: str | None, carried: str) -> None:
    assert run.verify_spec(given) == carried


@pytest.mark.parametrize("given", ["", "app", ":check", "app:", ":"])
def test_verify_spec_refuses_what_is_not_module_function(given: str) -> None:
    with pytest.raises(UsageError, match="expected MODULE:FUNCTION"):
        run.verify_spec(given)


def test_ps_with_no_agent_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    out, err = io.StringIO(), io.StringIO()
    fake = FakeTransport({})
    assert run.list_agents(NDJSON, transport=fake, out=out, err=err) == 0
    assert out.getvalue() == '{"summary":{}}\n'
    assert (
        err.getvalue() == "reloadctl: no live reloadctl agent of this user found on this machine\n"
    )
    assert fake.calls == []


def test_reload_request_without_push_carries_no_source() -> None:
    req = run.reload_request(["a", "b", "a"], dry_run=True, dependents=False, deadline_s=5.0)
    assert req == ReloadRequest(("a", "b"), dry_run=True, deadline_s=5.0)
    assert req.push == () and not req.write


@pytest.mark.parametrize(
    "extra",
    [{"roots": [Path(".")]}, {"write": True}, {"allow_new_top_level": True}],
    ids=["root", "write", "allow-new-top-level"],
)
def test_push_options_need_push(extra: dict[str, object]) -> None:
    with pytest.raises(UsageError, match="go with --push"):
        run.reload_request(["a"], dry_run=False, dependents=False, deadline_s=5.0, **extra)  # type: ignore[arg-type]


def test_reload_request_with_push_reads_the_source_now(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("X = 1\n")
    req = run.reload_request(
        ["pkg"],
        dry_run=False,
        dependents=False,
        deadline_s=5.0,
        push=True,
        roots=[tmp_path],
        write=True,
    )
    assert [(f.module, f.path) for f in req.push] == [
        ("pkg", "pkg/__init__.py"),
        ("pkg.mod", "pkg/mod.py"),
    ]
    assert req.push_trees == ("pkg",) and req.write and not req.allow_new_top_level
    with pytest.raises(UsageError, match=r"no pkg/nosuch\.py"):  # a usage error: exit 2
        run.reload_request(
            ["pkg.nosuch"],
            dry_run=False,
            dependents=False,
            deadline_s=5.0,
            push=True,
            roots=[tmp_path],
        )
