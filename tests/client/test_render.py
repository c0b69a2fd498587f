"""Golden records and output formats of the renderer."""

from __future__ import annotations

import io
import json

from reloadctl.client.fanout import ANSWERED, Outcome
from reloadctl.client.render import (
    Renderer,
    agent_record,
    module_record,
    plural,
    summarize,
    target_record,
    write_targets,
)
from reloadctl.client.targets import Target
from reloadctl.proto.messages import AgentInfo
from reloadctl.results import (
    FAILED,
    RELOADED,
    UNREACHABLE,
    Action,
    ErrorInfo,
    ModuleResult,
    PatchedModule,
)

T1 = Target("web1", "tcp://10.0.0.1:7878")
T2 = Target("web2", "tcp://10.0.0.2:7878")
OK = ModuleResult(
    "shop.pricing",
    RELOADED,
    actions=(Action("patched", "shop.pricing.price", ""), Action("added", "shop.pricing.TAX", "")),
    warnings=("instances created before reload keep the old class: __slots__ changed",),
    duration_ms=12.3456,
)
BAD = ModuleResult(
    "shop.pricing",
    FAILED,
    ErrorInfo("SyntaxError", "invalid syntax (pricing.py, line 3)", "Traceback (most recent...)"),
    duration_ms=4.0,
)
DOWN_ERR = ErrorInfo("TargetUnreachable", "connection refused")
DOWN = Outcome(
    T2,
    UNREACHABLE,
    (ModuleResult("shop.pricing", UNREACHABLE, DOWN_ERR, duration_ms=1.0),),
    error=DOWN_ERR,
)


def test_module_record_golden() -> None:
    assert module_record("web1", OK) == {
        "target": "web1",
        "module": "shop.pricing",
        "status": "reloaded",
        "error": None,
        "duration_ms": 12.346,
        "actions": [
            {"kind": "patched", "name": "shop.pricing.price", "detail": ""},
            {"kind": "added", "name": "shop.pricing.TAX", "detail": ""},
        ],
        "warnings": ["instances created before reload keep the old class: __slots__ changed"],
    }
    assert module_record("web2", BAD)["error"] == {
        "type": "SyntaxError",
        "message": "invalid syntax (pricing.py, line 3)",
        "traceback": "Traceback (most recent...)",
    }
    assert list(module_record("x", BAD)) == [
        "target",
        "module",
        "status",
        "error",
        "duration_ms",
        "actions",
        "warnings",
    ]


def test_agent_record_golden() -> None:
    info = AgentInfo(
        pid=7,
        program="shop",
        python="3.11.7",
        version="0.1.0",
        started_at=100.0,
        uptime_s=5.0,
        address="unix:///run/a.sock",
        patched=(PatchedModule("shop.pricing", 2, 101.0, True),),
    )
    rec = agent_record(Outcome(T1, ANSWERED, info=info, duration_ms=2.0))
    assert rec == {
        "target": "web1",
        "status": "ok",
        "error": None,
        "duration_ms": 2.0,
        "agent": {
            "pid": 7,
            "program": "shop",
            "python": "3.11.7",
            "version": "0.1.0",
            "started_at": 100.0,
            "uptime_s": 5.0,
            "address": "unix:///run/a.sock",
            "read_only": False,
            "patched": [
                {"module": "shop.pricing", "reloads": 2, "last_reload": 101.0, "diverged": True}
            ],
        },
    }


def test_summary_order_is_fixed() -> None:
    assert list(summarize(["unreachable", "failed", "reloaded", "zzz", "reloaded"]).items()) == [
        ("reloaded", 2),
        ("failed", 1),
        ("unreachable", 1),
        ("zzz", 1),
    ]


def render(output: str, *outcomes: Outcome, quiet: bool = False) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    r = Renderer(output, "modules", out, err, total=len(outcomes), quiet=quiet)
    for o in outcomes:
        r.outcome(o)
    r.finish()
    return out.getvalue(), err.getvalue()


def test_ndjson_streams_records_then_summary() -> None:
    out = io.StringIO()
    r = Renderer("ndjson", "modules", out, io.StringIO(), total=2)
    r.outcome(Outcome(T1, ANSWERED, (OK,)))
    # Written as soon as the target ended, before finish().
    assert json.loads(out.getvalue())["target"] == "web1"
    r.outcome(DOWN)
    r.finish()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [x.get("status") for x in lines[:2]] == ["reloaded", "unreachable"]
    assert lines[-1] == {"summary": {"reloaded": 1, "unreachable": 1}}


def test_json_is_one_document() -> None:
    out, _ = render("json", Outcome(T1, ANSWERED, (OK,)), DOWN)
    doc = json.loads(out)
    assert doc["summary"] == {"reloaded": 1, "unreachable": 1}
    assert [r["target"] for r in doc["results"]] == ["web1", "web2"]


def test_table_has_columns_warnings_and_recap() -> None:
    out, err = render("table", Outcome(T1, ANSWERED, (OK,)), Outcome(T2, ANSWERED, (BAD,)))
    lines = out.splitlines()
    assert lines[0].split() == ["TARGET", "MODULE", "STATUS", "MS", "DETAIL"]
    assert lines[1].split()[:3] == ["web1", "shop.pricing", "reloaded"]
    assert "1 patched, 1 added" in lines[1]
    assert "SyntaxError: invalid syntax (pricing.py, line 3)" in lines[2]
    assert "warnings:" in lines
    assert any("__slots__ changed" in line for line in lines)
    assert lines[-1] == "2 targets: 1 reloaded, 1 failed"
    assert err.count("\n") == 2  # one progress line per target


def test_quiet_means_no_progress() -> None:
    _, err = render("ndjson", Outcome(T1, ANSWERED, (OK,)), quiet=True)
    assert err == ""


def test_progress_lines_name_target_and_status() -> None:
    _, err = render("ndjson", Outcome(T1, ANSWERED, (OK,), duration_ms=3.0), DOWN)
    lines = err.splitlines()
    assert lines[0] == "[1/2] web1: shop.pricing reloaded (3.0 ms)"
    assert lines[1] == (
        "[2/2] web2: shop.pricing unreachable (TargetUnreachable: connection refused) (0.0 ms)"
    )
    assert "1 reloaded, 1 unreachable" in lines[2]


def test_live_progress_rewrites_one_line_and_clears_it() -> None:
    out, err = io.StringIO(), io.StringIO()
    r = Renderer("table", "modules", out, err, total=2, live=True)
    r.outcome(Outcome(T1, ANSWERED, (OK,)))
    assert err.getvalue() == "\r\x1b[K[1/2] 1 reloaded"
    r.outcome(DOWN)
    r.finish()
    assert err.getvalue().endswith("\r\x1b[K[2/2] 1 reloaded, 1 unreachable\r\x1b[K")
    assert "\n" not in err.getvalue()  # nothing left behind on the terminal
    assert out.getvalue().splitlines()[-1] == "2 targets: 1 reloaded, 1 unreachable"


def test_live_only_for_tables() -> None:
    err = io.StringIO()
    r = Renderer("ndjson", "modules", io.StringIO(), err, total=1, live=True)
    r.outcome(Outcome(T1, ANSWERED, (OK,)))
    assert err.getvalue().startswith("[1/1] web1:")


def test_counts_agree_in_number() -> None:
    assert [plural(n, "target") for n in (0, 1, 2)] == ["0 targets", "1 target", "2 targets"]
    out, err = render("table", Outcome(T1, ANSWERED, (OK,)))
    assert out.splitlines()[-1] == "1 target: 1 reloaded"
    _, err = render("ndjson", Outcome(T1, ANSWERED, (OK,)))
    assert err.splitlines()[-1].startswith("1 target in ")
    err_stream = io.StringIO()
    r = Renderer("ndjson", "agents", io.StringIO(), err_stream, total=1, noun="agent")
    r.outcome(Outcome(T1, ANSWERED))
    r.finish()
    assert err_stream.getvalue().splitlines()[-1].startswith("1 agent in ")


def test_a_rollback_says_so_in_plain_words() -> None:
    restored = ModuleResult(
        "shop.pricing",
        RELOADED,
        actions=(Action("restored", "shop.pricing.price"), Action("restored", "shop.pricing.TAX")),
    )
    out, _ = render("table", Outcome(T1, ANSWERED, (restored,)))
    row = out.splitlines()[1]
    assert row.split()[2] == "reloaded"  # the contract's status; only the DETAIL is prose
    assert row.endswith("rolled back to the previous version")
    # machine-readable records keep the actions as they are
    assert module_record("web1", restored)["actions"][0]["kind"] == "restored"  # type: ignore[index]


def test_targets_preview_formats() -> None:
    t = Target("a", "tcp://10.0.0.1:7878", labels=(("role", "api"),), group="web")
    out = io.StringIO()
    write_targets([t, T2], "ndjson", out)
    first = json.loads(out.getvalue().splitlines()[0])
    assert (
        first
        == target_record(t)
        == {
            "target": "a",
            "address": "tcp://10.0.0.1:7878",
            "group": "web",
            "labels": {"role": "api"},
            "problem": None,
        }
    )
    out = io.StringIO()
    write_targets([t], "json", out)
    assert json.loads(out.getvalue()) == {"targets": [target_record(t)]}
    out = io.StringIO()
    write_targets([t], "table", out)
    assert out.getvalue().splitlines()[1].split() == [
        "a",
        "tcp://10.0.0.1:7878",
        "web",
        "role=api",
        "-",
    ]
