"""click group held by the program, invoked with click's CliRunner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edits import Edit

MODULES = ("tool", "tool.cli", "tool.admin")
QUICK = "add command"
CALLS = [["hello", "ann"], ["version"], ["legacy"], ["bye"], ["admin", "purge"], ["--help"]]


def start(root: Path) -> dict[str, Any]:
    from tool.cli import cli

    return {"program": cli}  # what `main = cli` in a running program holds


def probe(state: dict[str, Any]) -> dict[str, Any]:
    from click.testing import CliRunner

    runner = CliRunner()
    answers = {}
    for args in CALLS:
        result = runner.invoke(state["program"], args)
        answers[" ".join(args)] = [result.exit_code, result.output]
    return answers


EDITS = [
    Edit(
        "command body",
        "edit a handler body",
        {"tool/cli.py": ('click.echo(f"{GREETING} {name}")', 'click.echo(f"{GREETING}, {name}!")')},
    ),
    Edit(
        "add command",
        "add a command",
        {
            "tool/cli.py": (
                "@cli.command()\ndef legacy():",
                '@cli.command()\ndef bye():\n    click.echo("bye")\n\n\n'
                "@cli.command()\ndef legacy():",
            )
        },
    ),
    Edit(
        "remove command",
        "remove a command",
        {"tool/cli.py": ('@cli.command()\ndef legacy():\n    click.echo("legacy")\n', "")},
    ),
    Edit(
        "option default",
        "change a decorator's arguments",
        {"tool/cli.py": ("default=1", "default=2")},
    ),
    Edit(
        "constant", "change a constant", {"tool/cli.py": ('GREETING = "hello"', 'GREETING = "hi"')}
    ),
    Edit(
        "rename command", "rename a function", {"tool/cli.py": ("def version():", "def about():")}
    ),
    Edit(
        "add module (subgroup)",
        "add a module to a package",
        {
            "tool/admin.py": 'import click\n\n\n@click.group()\ndef admin():\n    """Admin."""\n\n\n'
            '@admin.command()\ndef purge():\n    click.echo("purged")\n',
            "tool/cli.py": (
                'GREETING = "hello"',
                'from tool.admin import admin\n\nGREETING = "hello"',
            ),
        },
    ),
    Edit(
        "add module (subgroup) registered",
        "add a module to a package",
        {
            "tool/admin.py": 'import click\n\n\n@click.group()\ndef admin():\n    """Admin."""\n\n\n'
            '@admin.command()\ndef purge():\n    click.echo("purged")\n',
            "tool/cli.py": [
                ('GREETING = "hello"', 'from tool.admin import admin\n\nGREETING = "hello"'),
                (
                    "@cli.command()\ndef version():",
                    "cli.add_command(admin)\n\n\n@cli.command()\ndef version():",
                ),
            ],
        },
    ),
]
