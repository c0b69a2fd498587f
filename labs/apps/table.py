"""The docs table from two lab runs: python labs/apps/table.py WITH.jsonl [WITHOUT.jsonl]

WITH.jsonl is ``run.py --json`` output; WITHOUT.jsonl the same with
``APPS_LAB_NO_ADAPTERS=1`` (the engine without framework adapters). Prints Markdown.
"""

from __future__ import annotations

import json
import sys


def load(path: str) -> dict[tuple[str, str], dict[str, object]]:
    rows = {}
    with open(path) as fh:
        for line in fh:
            record = json.loads(line)
            if "app" in record:
                rows[(record["app"], record["edit"])] = record
    return rows


def short(text: str, limit: int = 150) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main() -> int:
    with_adapters = load(sys.argv[1])
    without = load(sys.argv[2]) if len(sys.argv) > 2 else {}
    print("| App | Edit | Kind | Outcome | Without adapters | Reason given |")
    print("|---|---|---|---|---|---|")
    for (app, edit), row in with_adapters.items():
        before = without.get((app, edit), {}).get("outcome", "")
        print(
            f"| {app} | {edit} | {row['kind']} | **{row['outcome']}** | {before} "
            f"| {short(str(row['reason']))} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
