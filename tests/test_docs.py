"""The README and docs/ as a newcomer reads them on a fresh clone: every relative link and image
resolves to a file that the clone has (and a heading, for a #anchor), every docs/ page is
reachable from the README, the README stays short, its quick start is what CI runs, and its
suite example is an excerpt of the suite it names."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_MAX_LINES = 200

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)


def doc_pages(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def links(text: str) -> list[str]:
    """Targets of inline links and images, outside code blocks and code spans."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", text))
    return _LINK.findall(text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown page's headings, with GitHub's -1, -2 for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for _, title in _HEADING.findall(_FENCE.sub("", text)):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def clone_files(repo: Path) -> set[Path] | None:
    """What a fresh clone would have: tracked files plus new ones git does not ignore (None
    outside a git checkout: then existence on disk is all that is checked)."""
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                             cwd=repo, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {(repo / line).resolve() for line in out.splitlines() if line}


def broken_links(repo: Path = REPO) -> list[str]:
    """Every relative link of the README and docs/*.md that does not resolve, as
    'page: target (why)'."""
    files = clone_files(repo)
    problems = []
    for page in doc_pages(repo):
        for target in links(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page.resolve()
            where = f"{page.relative_to(repo)}: {target}"
            if not dest.is_relative_to(repo.resolve()):
                problems.append(f"{where} (outside the repository: a fresh clone lacks it)")
            elif not dest.exists():
                problems.append(f"{where} (no such file)")
            elif files is not None and dest.is_file() and dest not in files:
                problems.append(f"{where} (ignored by git: a fresh clone lacks it)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where} (no heading with anchor #{anchor})")
    return problems


def test_every_relative_link_resolves():
    assert broken_links() == []


def test_a_planted_broken_link_is_caught(tmp_path):
    """The checker itself: a copy of the docs with one missing file, one missing anchor and one
    link out of the repository must give exactly those three."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "# t\n\n## Where to go next\n\n- [a](docs/a.md)\n- [gone](docs/gone.md)\n"
        "- [bad anchor](docs/a.md#nowhere) and [good](docs/a.md#timms-model-contract)\n"
        "- [out](../shared/DESIGN.md) and `[not a link](docs/code-span.md)`\n"
        "- [self](#where-to-go-next) ![fig](docs/a.md)\n\n```\n[in a block](docs/x.md)\n```\n")
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## timm's model contract\n\n[up](../README.md)\n")
    assert sorted(broken_links(tmp_path)) == [
        "README.md: ../shared/DESIGN.md (outside the repository: a fresh clone lacks it)",
        "README.md: docs/a.md#nowhere (no heading with anchor #nowhere)",
        "README.md: docs/gone.md (no such file)",
    ]


@pytest.mark.parametrize("heading, anchor", [
    ("The committed report (real data, CPU scale)", "the-committed-report-real-data-cpu-scale"),
    ("The method under test: `mp_resnet`", "the-method-under-test-mp_resnet"),
    ("Streaming (image folders larger than memory)", "streaming-image-folders-larger-than-memory"),
    ("Dependencies, and why each is there", "dependencies-and-why-each-is-there"),
])
def test_slug_is_githubs(heading, anchor):
    """GitHub's anchors for headings of these pages (as github.com renders them)."""
    assert slug(heading) == anchor


def test_every_docs_page_is_reachable_from_the_readme():
    reached, todo = set(), [README.resolve()]
    while todo:
        page = todo.pop()
        if page in reached or not page.exists():
            continue
        reached.add(page)
        for target in links(page.read_text(encoding="utf-8")):
            path = target.partition("#")[0]
            if path.endswith(".md") and not re.match(r"^[a-z][a-z0-9+.-]*:", path, re.I):
                todo.append((page.parent / path).resolve())
    orphans = [p.name for p in doc_pages()[1:] if p.resolve() not in reached]
    assert orphans == [], f"docs pages no link leads to (add a line to the README's 'Where to go next'): {orphans}"


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n < README_MAX_LINES, f"README.md has {n} lines: move reference material into docs/"


def _quick_start_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_quick_start_is_what_ci_runs():
    """The README's two commands are the ones .ci/run runs (CI may only add report flags)."""
    commands = _quick_start_commands()
    assert commands == ['pip install -e ".[test]" && mpbench run suites/smoke.yaml', "python -m pytest"]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert any(line == command or line.startswith(command + " ") for line in ci), command


def _subset(part, whole, where="") -> list[str]:
    if isinstance(part, dict):
        if not isinstance(whole, dict):
            return [f"{where}: not a mapping in the suite"]
        return [m for k, v in part.items()
                for m in (_subset(v, whole[k], f"{where}.{k}") if k in whole else [f"{where}.{k}: not in the suite"])]
    if isinstance(part, list) and part and isinstance(part[0], dict):
        return [f"{where}: {entry} not in the suite" for entry in part if entry not in whole]
    return [] if part == whole else [f"{where}: {part!r} in the README, {whole!r} in the suite"]


def test_readme_suite_example_is_an_excerpt_of_its_suite():
    """The README shows an excerpt of a shipped suite: every value it shows is the suite's."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Suites", 1)[1]
    name = re.search(r"excerpt of `(suites/[^`]+\.yaml)`", section).group(1)
    excerpt = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    suite = yaml.safe_load((REPO / name).read_text())
    assert _subset(excerpt, suite) == []
