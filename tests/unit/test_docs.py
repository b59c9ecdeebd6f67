"""The docs hold: every link between README.md and docs/ resolves, every path they name exists, and
every ``smartpay`` command they show parses as written; the safe ones (``--help``, ``openapi --check``,
``replay … --dry-run``, ``generate``) are run as written."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from smartpay_tools import PROJECT_ROOT
from smartpay_tools.cli import build_parser

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
PATH_ROOTS = ("functions/", "layers/", "tools/", "tests/", "benchmarks/", "events/", "docs/", ".ci/")
PLACEHOLDER = re.compile(r"[<>{}*…]|\bNN\b|\.\.\.")
SMARTPAY = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:\.venv/bin/smartpay|smartpay|\$S)\s+(.*)$")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.M)}


def _prose(page: Path) -> str:
    return FENCE.sub("", page.read_text())


def _links() -> list[tuple[Path, str]]:
    return [(page, m.group(1)) for page in PAGES for m in LINK.finditer(_prose(page))]


@pytest.mark.parametrize(("page", "target"), _links(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_links_between_pages_resolve(page: Path, target: str) -> None:
    if re.match(r"^[a-z]+:", target):  # https:, mailto: — outside the repository
        return
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.name}: link to a missing file {target}"
    assert PROJECT_ROOT in resolved.parents or resolved == PROJECT_ROOT, f"{page.name}: {target} leaves the repository"
    if anchor:
        assert resolved.suffix == ".md", f"{page.name}: anchor into a non-page {target}"
        assert anchor in _anchors(resolved), f"{page.name}: no heading #{anchor} in {resolved.name}"


def _named_paths() -> list[tuple[Path, str]]:
    found = []
    for page in PAGES:
        for m in CODE_SPAN.finditer(page.read_text()):
            for token in m.group(1).split():
                token = token.strip("(),;:'\"").split("::")[0].split("#")[0]
                if token.startswith(PATH_ROOTS) and not PLACEHOLDER.search(token):
                    found.append((page, token))
    return sorted(set(found))


@pytest.mark.parametrize(("page", "path"), _named_paths(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_paths_the_docs_name_exist(page: Path, path: str) -> None:
    assert (PROJECT_ROOT / path).exists(), f"{page.name} names {path}, which does not exist"


def _folder_map() -> list[tuple[str, str]]:
    """(folder, file) for every file the README's folder map names in a row about a folder."""
    rows = re.findall(r"^\| `([\w./<>-]+/)` \| (.+) \|$", (PROJECT_ROOT / "README.md").read_text(), re.M)
    return [(folder, name) for folder, text in rows if "<" not in folder
            for name in re.findall(r"`([\w/]+\.(?:py|sql))`", text)]


def test_the_folder_map_covers_the_tools() -> None:
    """One hop: every package under tools/smartpay_tools has its row in the README's folder map."""
    folders = {folder for folder, _ in _folder_map()}
    packages = {f"{p.parent.relative_to(PROJECT_ROOT)}/" for p in (PROJECT_ROOT / "tools").rglob("__init__.py")}
    assert packages - {"tools/smartpay_tools/"} <= folders


@pytest.mark.parametrize(("folder", "name"), _folder_map())
def test_the_folder_map_names_files_that_exist(folder: str, name: str) -> None:
    assert (PROJECT_ROOT / folder / name).exists(), f"README folder map: {folder}{name} does not exist"


def _commands() -> list[tuple[Path, str]]:
    """Every ``smartpay …`` command line in a code block or a code span, as written."""
    lines = []
    for page in PAGES:
        text = page.read_text()
        candidates = [line for block in FENCE.findall(text) for line in block.splitlines()]
        # Code spans in table rows are examples (the CLI tables); in running prose a span is a reference
        # to a command or a flag (`smartpay keys add`), not a command line to run.
        rows = [line for line in _prose(page).splitlines() if line.lstrip().startswith("|")]
        candidates += [span for line in rows for span in CODE_SPAN.findall(line) if len(span.split()) > 2]
        for line in candidates:
            match = SMARTPAY.match(line.strip())
            if match and "COMMAND" not in match.group(1):
                lines.append((page, match.group(1)))
    return sorted(set(lines))


def _argv(rest: str) -> list[str]:
    rest = re.split(r" #| [|>] ", rest, maxsplit=1)[0]  # a trailing shell comment, pipe or redirection
    rest = re.sub(r"\s\[[^\]]*\]", "", rest)  # [optional parts] shown in brackets
    return shlex.split(rest)


def _strict_parser() -> argparse.ArgumentParser:
    """The CLI's parser, refusing abbreviated options: a doc must spell every flag in full."""
    parser = build_parser()
    for sub in [parser, *parser._subparsers._group_actions[0].choices.values()]:
        sub.allow_abbrev = False
    return parser


@pytest.mark.parametrize(("page", "command"), _commands(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_documented_commands_parse(page: Path, command: str) -> None:
    try:
        _strict_parser().parse_args(_argv(command))
    except SystemExit as exc:  # --help exits 0 after printing; anything else is a usage error
        assert exc.code == 0, f"{page.name}: `smartpay {command}` does not parse (exit {exc.code})"


def test_the_docs_show_commands() -> None:
    """Guard for the tests above: they would pass vacuously if the patterns found nothing."""
    names = {_argv(c)[0] for _, c in _commands() if not _argv(c)[0].startswith("-")}
    assert {"serve", "invoke", "cycle", "replay", "reconcile", "report", "openapi", "keys"} <= names


def _run(argv: list[str], cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smartpay_tools", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


#: Commands that only read, or write nothing but their own output file: run for real, as written.
SAFE = re.compile(r"(^|\s)--help(\s|$)|^openapi --check$|^replay\s.*--dry-run|^generate\s")


def _safe_commands() -> list[str]:
    return sorted({shlex.join(_argv(c)) for _, c in _commands() if SAFE.search(shlex.join(_argv(c)))})


@pytest.mark.parametrize("command", _safe_commands())
def test_safe_documented_commands_run_as_written(command: str, tmp_path: Path) -> None:
    argv = shlex.split(command)
    # generate writes its file where it is run: run it in a scratch folder, as an operator would.
    out = _run(argv, cwd=tmp_path if argv[0] == "generate" else PROJECT_ROOT)
    assert out.returncode == 0, f"`smartpay {command}` exited {out.returncode}: {out.stderr[-2000:]}"


@pytest.mark.parametrize("name", sorted(build_parser()._subparsers._group_actions[0].choices))
def test_every_command_help_runs(name: str) -> None:
    out = _run([name, "--help"])
    assert out.returncode == 0 and out.stdout.startswith("usage: smartpay"), out.stderr


def test_make_targets_the_docs_name_exist() -> None:
    targets = set(re.findall(r"^([a-z]+):", (PROJECT_ROOT / "Makefile").read_text(), re.M))
    code = [c for page in PAGES for c in (*FENCE.findall(page.read_text()), *CODE_SPAN.findall(_prose(page)))]
    named = {m for c in code for m in re.findall(r"(?:^|\s)make ([a-z]+)\b", c)}
    assert named and named <= targets, f"docs name make targets that do not exist: {named - targets}"
