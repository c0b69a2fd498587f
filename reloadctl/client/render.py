"""Output: outcomes as NDJSON records, one JSON document or a table, and progress on stderr.

Rules:
1. A reload/rollback record is one (target, module) outcome with exactly the keys
   ``target, module, status, error, duration_ms, actions, warnings`` (``error``: null or
   ``{type, message, traceback}``; ``actions``: ``[{kind, name, detail}]``). A ping/status
   record is one target: ``target, status, error, duration_ms, agent`` (``agent``: null or
   the agent's info).
2. ``ndjson`` writes each record as soon as its target ends and flushes; the last line is
   ``{"summary": {status: count}}``. ``json`` writes one document at the end:
   ``{"results": [...], "summary": {...}}``. ``table`` writes aligned columns, then the
   warnings, then a recap line, all at the end.
3. Results go to ``out`` (stdout), progress to ``err`` (stderr): one line per target, or a
   single self-rewriting line when ``err`` is a terminal and the output is a table;
   nothing when quiet.
4. Records are built only from values (``Outcome``/``ModuleResult``/``AgentInfo``, and
   ``Target`` for the ``targets`` preview); this is the one place that turns them into dicts.
5. Counts a person reads agree in number ("1 target", "2 targets"); a rollback's module
   (``reloaded`` with ``restored`` actions) says "rolled back to the previous version".
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Final, TextIO

from reloadctl.client.fanout import ANSWERED, Outcome
from reloadctl.proto.messages import AgentInfo
from reloadctl.results import (
    AUTH_FAILED,
    FAILED,
    NOT_ATTEMPTED,
    NOT_LOADED,
    REFUSED,
    RELOADED,
    TIMEOUT,
    UNCHANGED,
    UNREACHABLE,
    ErrorInfo,
    ModuleResult,
)

if TYPE_CHECKING:
    from reloadctl.client.targets import Target

__all__ = [
    "OUTPUTS",
    "Renderer",
    "agent_record",
    "format_table",
    "module_record",
    "plural",
    "summarize",
    "target_record",
    "write_targets",
]

OUTPUTS: Final = ("table", "json", "ndjson")
#: Summary keys come out in this order (then any status not listed, alphabetically).
_STATUS_ORDER: Final[tuple[str, ...]] = (
    ANSWERED,
    RELOADED,
    UNCHANGED,
    NOT_LOADED,
    FAILED,
    REFUSED,
    TIMEOUT,
    UNREACHABLE,
    AUTH_FAILED,
    NOT_ATTEMPTED,
)


def _error(error: ErrorInfo | None) -> dict[str, str] | None:
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def module_record(target: str, result: ModuleResult) -> dict[str, object]:
    """The NDJSON record of one (target, module) outcome (rule 1)."""
    return {
        "target": target,
        "module": result.module,
        "status": result.status,
        "error": _error(result.error),
        "duration_ms": round(result.duration_ms, 3),
        "actions": [{"kind": a.kind, "name": a.name, "detail": a.detail} for a in result.actions],
        "warnings": list(result.warnings),
    }


def _agent(info: AgentInfo) -> dict[str, object]:
    return {
        "pid": info.pid,
        "program": info.program,
        "python": info.python,
        "version": info.version,
        "started_at": info.started_at,
        "uptime_s": round(info.uptime_s, 3),
        "address": info.address,
        "read_only": info.read_only,
        "patched": [
            {
                "module": p.module,
                "reloads": p.reloads,
                "last_reload": p.last_reload,
                "diverged": p.diverged,
            }
            for p in info.patched
        ],
    }


def agent_record(outcome: Outcome) -> dict[str, object]:
    """The record of one target for ``ping``/``status`` (rule 1)."""
    return {
        "target": outcome.target.name,
        "status": outcome.status,
        "error": _error(outcome.error),
        "duration_ms": round(outcome.duration_ms, 3),
        "agent": None if outcome.info is None else _agent(outcome.info),
    }


def summarize(statuses: Iterable[str]) -> dict[str, int]:
    """Count statuses, in a fixed order (rule 2)."""
    counts: dict[str, int] = {}
    for s in statuses:
        counts[s] = counts.get(s, 0) + 1
    return _ordered(counts)


def _ordered(counts: dict[str, int]) -> dict[str, int]:
    rest = dict(counts)
    ordered: dict[str, int] = {s: rest.pop(s) for s in _STATUS_ORDER if s in rest}
    ordered.update(sorted(rest.items()))
    return ordered


def plural(n: int, noun: str) -> str:
    """``1 target``, ``2 targets``, ``0 targets`` (rule 5)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _recap(summary: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in summary.items()) or "nothing to report"


def _one_line(text: str, limit: int = 100) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _uptime(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"


def format_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


#: The DETAIL of a rollback's module (rule 5): its actions are all ``restored``.
ROLLED_BACK_DETAIL: Final = "rolled back to the previous version"


def _detail(result: ModuleResult) -> str:
    if result.error is not None:
        return _one_line(f"{result.error.type}: {result.error.message}")
    if result.actions and all(a.kind == "restored" for a in result.actions):
        return ROLLED_BACK_DETAIL
    kinds: dict[str, int] = {}
    for a in result.actions:
        kinds[a.kind] = kinds.get(a.kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in kinds.items())


def _patched(info: AgentInfo) -> str:
    parts = []
    for p in info.patched:
        mark = {True: ", diverged from disk", False: "", None: ", disk unknown"}[p.diverged]
        parts.append(f"{p.module} ({p.reloads}x{mark})")
    return "; ".join(parts) or "-"


class Renderer:
    """Writes outcomes of one command in one output format (rules 2-3).

    Args:
        output: one of ``OUTPUTS``.
        kind: ``"modules"`` (reload, rollback: one record per module) or ``"agents"``
            (ping, status: one record per target).
        out, err: the result and progress streams.
        total: number of targets, for progress.
        quiet: no progress at all.
        live: rewrite one progress line in place instead of printing a line per target.
        verbose: the table shows tracebacks of failed modules.
        noun: what the recap counts (``target``; ``agent`` for ``ps``).
    """

    def __init__(
        self,
        output: str,
        kind: str,
        out: TextIO,
        err: TextIO,
        *,
        total: int,
        quiet: bool = False,
        live: bool = False,
        verbose: bool = False,
        noun: str = "target",
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}")
        self.output = output
        self.kind = kind
        self.out = out
        self.err = err
        self.total = total
        self.quiet = quiet
        self.live = live and output == "table"
        self.verbose = verbose
        self.noun = noun
        self.records: list[dict[str, object]] = []
        self.outcomes: list[Outcome] = []
        self._started = time.monotonic()
        # status -> records so far, for the live line (recounting every record per outcome
        # would make a large fleet's progress quadratic)
        self._counts: dict[str, int] = {}

    def records_of(self, outcome: Outcome) -> list[dict[str, object]]:
        """The records of one outcome (rule 1)."""
        if self.kind == "agents":
            return [agent_record(outcome)]
        return [module_record(outcome.target.name, r) for r in outcome.results]

    def outcome(self, outcome: Outcome) -> None:
        """Take one finished target: stream its records (ndjson) and report progress."""
        self.outcomes.append(outcome)
        records = self.records_of(outcome)
        self.records.extend(records)
        for r in records:
            status = str(r["status"])
            self._counts[status] = self._counts.get(status, 0) + 1
        if self.output == "ndjson":
            for r in records:
                self.out.write(json.dumps(r, separators=(",", ":")) + "\n")
            self.out.flush()
        self._progress(outcome)

    def _progress(self, outcome: Outcome) -> None:
        if self.quiet:
            return
        n = len(self.outcomes)
        if self.live:
            summary = _ordered(self._counts)
            self.err.write(f"\r\x1b[K[{n}/{self.total}] {_recap(summary)}")
        else:
            if self.kind == "agents" or not outcome.results:
                what = outcome.status
            else:
                what = ", ".join(f"{r.module} {r.status}" for r in outcome.results)
            if outcome.error is not None:  # the target did not answer: say why, once
                what += f" ({_detail_of(outcome)})"
            took = _ms(outcome.duration_ms)
            self.err.write(f"[{n}/{self.total}] {outcome.target.name}: {what} ({took} ms)\n")
        self.err.flush()

    def summary(self) -> dict[str, int]:
        """Status counts over every record so far."""
        return summarize(str(r["status"]) for r in self.records)

    def finish(self) -> None:
        """Write what comes at the end: the summary line, the document or the table."""
        summary = self.summary()
        if self.live and not self.quiet:
            self.err.write("\r\x1b[K")
            self.err.flush()
        if self.output == "ndjson":
            self.out.write(json.dumps({"summary": summary}, separators=(",", ":")) + "\n")
        elif self.output == "json":
            doc = {"results": self.records, "summary": summary}
            self.out.write(json.dumps(doc, indent=2) + "\n")
        else:
            self.out.write("\n".join(self._table_lines(summary)) + "\n")
        self.out.flush()
        if not self.quiet and self.output != "table":
            elapsed = (time.monotonic() - self._started) * 1000
            count = plural(len(self.outcomes), self.noun)
            self.err.write(f"{count} in {_ms(elapsed)} ms: {_recap(summary)}\n")
            self.err.flush()

    def _table_lines(self, summary: dict[str, int]) -> list[str]:
        lines: list[str] = []
        if self.kind == "agents":
            rows = [["TARGET", "STATUS", "PID", "PROGRAM", "PYTHON", "AGENT", "UPTIME", "PATCHED"]]
            for o in self.outcomes:
                if o.info is None:
                    rows.append([o.target.name, o.status, "-", "-", "-", "-", "-", _detail_of(o)])
                else:
                    i = o.info
                    rows.append(
                        [
                            o.target.name,
                            o.status,
                            str(i.pid),
                            i.program,
                            i.python,
                            i.version,
                            _uptime(i.uptime_s),
                            _patched(i),
                        ]
                    )
        else:
            rows = [["TARGET", "MODULE", "STATUS", "MS", "DETAIL"]]
            for o in self.outcomes:
                for r in o.results:
                    rows.append([o.target.name, r.module, r.status, _ms(r.duration_ms), _detail(r)])
        if len(rows) > 1:
            lines.extend(format_table(rows))
        warnings = [
            f"  {o.target.name} {r.module}: {w}"
            for o in self.outcomes
            for r in o.results
            for w in r.warnings
        ]
        if warnings:
            lines.append("")
            lines.append("warnings:")
            lines.extend(warnings)
        if self.verbose:
            for o in self.outcomes:
                for r in o.results:
                    if r.error is not None and r.error.traceback:
                        lines.append("")
                        lines.append(f"{o.target.name} {r.module}:")
                        lines.extend("  " + t for t in r.error.traceback.rstrip().splitlines())
        lines.append("")
        lines.append(f"{plural(len(self.outcomes), self.noun)}: {_recap(summary)}")
        return lines


def _detail_of(outcome: Outcome) -> str:
    if outcome.error is None:
        return ""
    return _one_line(f"{outcome.error.type}: {outcome.error.message}")


def target_record(target: Target) -> dict[str, object]:
    """The record of one selected target, for ``targets`` (rule 4)."""
    return {
        "target": target.name,
        "address": target.address,
        "group": target.group,
        "labels": dict(target.labels),
        "problem": target.problem or None,
    }


def write_targets(targets: Sequence[Target], output: str, out: TextIO) -> None:
    """The ``targets`` preview: one record per line, one document, or a table."""
    if output == "ndjson":
        for t in targets:
            out.write(json.dumps(target_record(t), separators=(",", ":")) + "\n")
    elif output == "json":
        out.write(json.dumps({"targets": [target_record(t) for t in targets]}, indent=2) + "\n")
    else:
        rows = [["TARGET", "ADDRESS", "GROUP", "LABELS", "PROBLEM"]]
        for t in targets:
            labels = ",".join(f"{k}={v}" for k, v in t.labels)
            rows.append([t.name, t.address, t.group or "-", labels or "-", t.problem or "-"])
        out.write("\n".join(format_table(rows)) + "\n")
    out.flush()
