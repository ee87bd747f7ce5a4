"""The documentation: a short README that shows the two commands and a TRL snippet that compiles, links that lead
somewhere, and a repository that speaks of the project alone. Text checks only: nothing is imported or run."""
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
README_MAX_LINES = 150  # a front door; manuals live in docs/
SNIPPET_IMPORT = "from rift_core import RIFTConfig, RIFTTrainer"
# How the people who build the project borrow machines is no part of it: a user has none of that. Phrases, not
# single words, so that "an open SQL session" or a pytest session fixture never match.
INFRASTRUCTURE = ("device tool", "give_back", "carry=", "one H200, no network", "lent to a session",
                  "session with a GPU")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def docs() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def test_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move the detail into docs/"


@pytest.mark.parametrize("doc", docs(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_to_files_that_exist(doc):
    missing = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            missing.append(target)
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


def test_readme_shows_the_two_commands_and_the_trl_snippet():
    text = README.read_text()
    for command in ("make demo", "make test"):
        assert command in text
    snippets = [block for block in re.findall(r"```python\n(.*?)```", text, re.S) if SNIPPET_IMPORT in block]
    assert snippets, f"no python block in README.md imports `{SNIPPET_IMPORT}`"
    compile(snippets[0], "README.md", "exec")  # raises SyntaxError if the snippet does not parse


def tracked_text_files() -> list[tuple[Path, str]]:
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    files = []
    for name in names.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file() or path == Path(__file__).resolve():
            continue  # this file names the phrases it looks for
        try:
            files.append((path, path.read_text()))
        except UnicodeDecodeError:
            continue  # images and other binaries
    return files


def test_no_file_describes_the_builders_infrastructure():
    found = [f"{path.relative_to(REPO)}: {phrase!r}" for path, text in tracked_text_files()
             for phrase in INFRASTRUCTURE if phrase in text]
    assert not found, "describe how a user runs things, not how the project is built: " + "; ".join(found)
