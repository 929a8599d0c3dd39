"""The project speaks for itself: README.md and docs/ name no path outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "clients" / "node" / "README.md", *(ROOT / "docs").rglob("*.md")])
# A path that starts by leaving the repository, a machine's absolute path, or a home directory.
OUTSIDE = re.compile(r"(?:^|[\s`(\[\"'=])(\.\./|/(?:work|tmp|root|home|opt|mnt|srv|var|scratch)/|~/)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_path_outside_the_repository(doc: Path) -> None:
    bad = [f"{doc.name}:{n}: {line.strip()}" for n, line in enumerate(doc.read_text().splitlines(), 1)
           if OUTSIDE.search(line)]
    assert bad == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_stay_inside_the_repository(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor
        resolved = (doc.parent / target.split("#", 1)[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
        assert resolved.exists(), f"{doc.name} links to a missing file: {target}"


def test_the_check_catches_what_it_is_for() -> None:
    for line in ("see ../shared/ARCHITECTURE.md", "`/work/shared/bench/peers/run.sh`", "in ~/.cache/x",
                 "logs in /tmp/conveyor-bench", "[a](../shared/x.md)"):
        assert OUTSIDE.search(line), line
    for line in ("`<data dir>/../admin.key`", "GET /api/jobs/{q}/{id}", "/usr/bin/chromium", "docs/api.md"):
        assert not OUTSIDE.search(line), line
