"""Service helpers: replies that would be too large are paginated, never dropped."""

from __future__ import annotations

from reloadctl.agent.service import encode_events
from reloadctl.proto import codec
from reloadctl.proto.messages import JobEvents
from reloadctl.results import ErrorInfo, ModuleResult


def _big(i: int, size: int) -> ModuleResult:
    return ModuleResult(f"m{i}", "failed", ErrorInfo("SyntaxError", "bad", "x" * size))


def test_small_events_are_sent_whole() -> None:
    events = JobEvents("j", 3, tuple(_big(i, 10) for i in range(3)), done=True)
    assert codec.decode(encode_events(events)) == events


def test_large_events_are_paginated_and_not_done_yet() -> None:
    results = tuple(_big(i, 300_000) for i in range(8))  # about 2.4 MB in all
    events = JobEvents("j", 10, results, done=True)  # results cover cursors 2..10
    part = codec.decode(encode_events(events))
    assert isinstance(part, JobEvents)
    assert 0 < len(part.results) < 8
    assert part.cursor == 2 + len(part.results)
    assert part.done is False  # the client polls again from part.cursor
    assert part.results == results[: len(part.results)]


def test_a_single_huge_result_is_shrunk() -> None:
    events = JobEvents("j", 1, (_big(0, 5_000_000),), done=True)
    part = codec.decode(encode_events(events))
    assert isinstance(part, JobEvents) and part.done and part.cursor == 1
    (result,) = part.results
    assert result.error is not None and 0 < len(result.error.traceback) <= 16_000
    assert result.module == "m0" and result.status == "failed"
