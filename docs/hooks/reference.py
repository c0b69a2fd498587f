"""mkdocs hook: the generated parts of the manual, rebuilt on every build, never committed.

Two markers in a page's Markdown are replaced when the page is built:

- ``<!-- cli-reference -->``: the CLI reference, written from the click command tree that
  typer builds from ``reloadctl.client.cli:app`` (usage, help text, arguments and options of
  every command, nested groups included). A page that should hold it and does not, or an
  app that cannot be imported, fails the build.
- ``<!-- include: PATH -->``: the current text of a file of the repository (PATH relative to
  the repository root), as a fenced code block, so examples shown are the files that run.
  A missing file fails the build.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

APP: str = "reloadctl.client.cli:app"
CLI_PAGE: str = "cli.md"
CLI_MARKER: str = "<!-- cli-reference -->"
INCLUDE = re.compile(r"^<!-- include: (?P<path>[^ ]+) -->$", re.MULTILINE)
WIDTH: int = 100
LANGUAGES: dict[str, str] = {".py": "python", ".yml": "yaml", ".toml": "toml", ".sh": "bash"}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Expand the markers of one page (mkdocs event)."""
    root = Path(config["config_file_path"]).resolve().parent
    if page.file.src_uri == CLI_PAGE:
        if CLI_MARKER not in markdown:
            raise PluginError(f"{CLI_PAGE} lost its {CLI_MARKER} marker")
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return INCLUDE.sub(lambda match: include(root, match.group("path")), markdown)


def include(root: Path, relative: str) -> str:
    """The file at ``root/relative`` as a fenced block; a missing file is an error."""
    path = (root / relative).resolve()
    if root not in path.parents or not path.is_file():
        raise PluginError(f"include: no file {relative} in the repository")
    language = LANGUAGES.get(path.suffix, "text")
    return f"```{language}\n# {relative}\n{path.read_text(encoding='utf-8').rstrip()}\n```"


def load_command() -> Any:
    """The click command typer builds from the app (import errors fail the build).

    Typed and handled by duck typing: typer 0.28 builds it with its vendored copy of click
    (``typer._click``), other releases with click itself; both have the same interface.
    """
    import typer.main

    module_name, _, attribute = APP.partition(":")
    try:
        app = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"cannot load the CLI app {APP}: {exc}") from exc
    return typer.main.get_command(app)


def cli_reference() -> str:
    """Markdown for the whole command tree, root first, then each command in its order."""
    root = load_command()
    ctx = root.context_class(
        root, info_name=root.name or "reloadctl", terminal_width=WIDTH, **root.context_settings
    )
    out: list[str] = []
    _command(root, ctx, out, top=True)
    return "\n".join(out).rstrip() + "\n"


def _command(command: Any, ctx: Any, out: list[str], *, top: bool) -> None:
    path = ctx.command_path
    out += [f"### `{path}`", ""]
    out += ["```text", command.get_usage(ctx), "```", ""]
    out += _help(command.help or "")
    params = [param for param in command.get_params(ctx) if not getattr(param, "hidden", False)]
    for kind, title in (("argument", "Arguments"), ("option", "Options")):
        records = [
            record
            for param in params
            if param.param_type_name == kind and (record := _record(param, ctx)) is not None
        ]
        if records:
            heading = "Global options" if top and kind == "option" else title
            out += [f"**{heading}**", ""]
            out += [f"- `{name}`: {_inline(text)}" for name, text in records]
            out.append("")
    if hasattr(command, "list_commands"):  # a group
        subcommands = [
            (name, command.get_command(ctx, name)) for name in command.list_commands(ctx)
        ]
        visible = [(name, sub) for name, sub in subcommands if sub is not None and not sub.hidden]
        out += ["**Commands**", ""]
        out += [
            f"- [`{name}`](#{_anchor(f'{path} {name}')}): {_inline(sub.get_short_help_str(WIDTH))}"
            for name, sub in visible
        ]
        out.append("")
        for name, sub in visible:
            sub_ctx = sub.context_class(sub, info_name=name, parent=ctx, **sub.context_settings)
            _command(sub, sub_ctx, out, top=False)


def _record(param: Any, ctx: Any) -> tuple[str, str] | None:
    """(names, help) as ``--help`` shows them; arguments without help get their metavar."""
    record: tuple[str, str] | None = param.get_help_record(ctx)
    if record is None and param.param_type_name == "argument":
        return (param.make_metavar(ctx), "")
    return record


def _help(text: str) -> list[str]:
    """A command's help: prose paragraphs unwrapped; ``\\b`` blocks (examples) kept verbatim."""
    lines: list[str] = []
    for paragraph in text.strip().split("\n\n"):
        if paragraph.startswith("\b"):
            block = paragraph[1:].strip("\n").splitlines()
            if block and block[0].rstrip().endswith(":") and not block[0].startswith(" "):
                lines += [f"**{block[0].strip()}**", ""]
                block = block[1:]
            lines += ["```text", *_dedent(block), "```", ""]
        else:
            lines += [_inline(" ".join(line.strip() for line in paragraph.splitlines())), ""]
    return lines


def _dedent(block: list[str]) -> list[str]:
    indents = [len(line) - len(line.lstrip()) for line in block if line.strip()]
    cut = min(indents, default=0)
    return [line[cut:] for line in block]


def _inline(text: str) -> str:
    """Prose for Markdown: angle brackets outside code spans escaped (``<int>`` is no tag)."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).strip()


def _anchor(title: str) -> str:
    """The id mkdocs' toc extension gives a heading ``### `title` ``."""
    return re.sub(r"[^\w]+", "-", title.lower()).strip("-")
