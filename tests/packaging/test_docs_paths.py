"""The project speaks for itself: README.md and docs/ name no path outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "clients" / "node" / "README.md", *(ROOT / "docs").rglob("*.md")])
# A build machine's path (its work, temporary and root folders) or the external benchmark harness's
# folders; and relative paths that climb out of their folder, which must still land inside the
# repository. Paths of a user's own machine in examples (/home/ada/myproj, /opt/conveyor) are fine.
OUTSIDE = re.compile(r"(?:^|[\s`(\[\"'=])/(?:work|tmp|root|mnt|scratch)/|shared/bench|benchlogs|peerbench")
CLIMB = re.compile(r"(?:^|[\s`(\[\"'=])(\.\./[^\s`)\]\"']*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_path_outside_the_repository(doc: Path) -> None:
    bad = [f"{doc.name}:{n}: {line.strip()}" for n, line in enumerate(doc.read_text().splitlines(), 1)
           if OUTSIDE.search(line) or any(leaves(doc, p) for p in CLIMB.findall(line))]
    assert bad == []


def leaves(doc: Path, relative: str) -> bool:
    return not (doc.parent / relative).resolve().is_relative_to(ROOT)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_stay_inside_the_repository(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor
        resolved = (doc.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
        assert resolved.exists(), f"{doc.name} links to a missing file: {target}"


def test_the_check_catches_what_it_is_for() -> None:
    doc = ROOT / "docs" / "api.md"
    for line in ("`/work/shared/bench/peers/run.sh`", "venvs in ~/.cache/peerbench", "logs in /tmp/conveyor-bench"):
        assert OUTSIDE.search(line), line
    for line in ("see ../../shared/ARCHITECTURE.md", "[a](../../shared/x.md)"):
        assert any(leaves(doc, p) for p in CLIMB.findall(line)), line
    for line in ("`<data dir>/../admin.key`", "GET /api/jobs/{q}/{id}", "/usr/bin/chromium", "docs/api.md",
                 "cd ~/code/myproj", "the embedded server of /home/ada/myproj",
                 "[client](../clients/node/README.md)"):
        assert not OUTSIDE.search(line) and not any(leaves(doc, p) for p in CLIMB.findall(line)), line
