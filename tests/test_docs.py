"""The README stays a front page, every relative link of the docs resolves, and the manual's
build fails on a broken link and carries a CLI reference generated from the typer app."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_BYTES = 12_000
PAGES = sorted([README, ROOT / "CONTRIBUTING.md", *(ROOT / "docs").rglob("*.md")])

# [text](target) and [label]: target; fenced blocks and code spans are removed first.
INLINE_LINK = re.compile(r'!?\[[^\]]*\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+"[^"]*")?\s*\)')
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
FENCE = re.compile(r"^(\s*)(```|~~~).*?^\1\2\s*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.DOTALL)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto: ...


def relative_links(page: Path) -> list[str]:
    """Every link target of a Markdown page that is neither external nor a bare anchor."""
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    targets = [a or b for a, b in INLINE_LINK.findall(text)] + REFERENCE_LINK.findall(text)
    return [t for t in targets if not EXTERNAL.match(t) and not t.startswith("#")]


def test_readme_is_a_front_page_under_12_kb() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_readme_begins_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    before_first_section = text.split("\n## ", 1)[0]
    first_block = re.search(r"^```\w*\n(.*?)^```", before_first_section, re.DOTALL | re.MULTILINE)
    assert first_block is not None, "README.md must open with a code block of the two commands"
    commands = [line.split()[1] for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["scripts/demo", "scripts/test"]
    for command in commands:
        assert (ROOT / command).is_file()


def test_relative_links_resolve_to_files_in_the_repository() -> None:
    broken = []
    checked = 0
    for page in PAGES:
        for target in relative_links(page):
            checked += 1
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if ROOT not in path.parents or not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, "links to nothing in the repository:\n" + "\n".join(broken)
    assert checked > 30  # the pages do link to each other: the regexes found them


def test_link_finder_sees_inline_and_reference_links_but_not_code(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        '[a](x.md) [b](<y z.md>) ![i](img.png "t") [c](https://e.org) [d](#here)\n'
        "`[e](in-span.md)`\n```\n[f](in-block.md)\n```\n[ref]: z.md#part\n"
    )
    assert relative_links(page) == ["x.md", "y z.md", "img.png", "z.md#part"]


def _copy_repository(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", "site", "__pycache__", ".*_cache", ".hypothesis", "results"
    )
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_manual_builds_strictly_and_a_broken_link_fails_it(tmp_path: Path) -> None:
    repo = _copy_repository(tmp_path / "repo")
    built = _build(repo, tmp_path / "site")
    assert built.returncode == 0, built.stderr[-3000:]
    reference = (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("reload", "rollback", "ping", "status", "ps", "targets", "watch"):
        assert f'id="reloadctl-{command}"' in reference
    assert 'id="reloadctl-rollout-resume"' in reference
    assert "--max-failures" in reference and "--connect-timeout" in reference

    page = repo / "docs" / "fleet.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [nothing](no-such-page.md).\n")
    broken = _build(repo, tmp_path / "site2")
    assert broken.returncode != 0
    assert "no-such-page.md" in broken.stderr


def test_cli_reference_lists_every_command_and_option_of_the_app() -> None:
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location(
        "reloadctl_docs_hook", ROOT / "docs" / "hooks" / "reference.py"
    )
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)  # the mkdocs hook itself
    spec.loader.exec_module(reference)
    markdown = reference.cli_reference()
    root = reference.load_command()

    sections = dict(
        (chunk.split("`", 1)[0], chunk) for chunk in markdown.split("### `reloadctl")[1:]
    )

    def walk(command: object, path: str) -> None:
        section = sections.get(path.removeprefix("reloadctl"))
        assert section is not None, f"no section for {path}"
        bullets = "\n".join(line for line in section.splitlines() if line.startswith("- `"))
        for param in command.params:  # type: ignore[attr-defined]
            if param.param_type_name == "option" and not param.hidden:
                for name in param.opts:
                    assert re.search(rf"^- `[^`]*{re.escape(name)}\b", bullets, re.M), (path, name)
        for name in getattr(command, "commands", {}):
            walk(command.commands[name], f"{path} {name}")  # type: ignore[attr-defined]

    walk(root, "reloadctl")
