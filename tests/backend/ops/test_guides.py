"""The README and docs/ as a reader meets them: every relative link leads to a file of
the project, and no guide has run away. docs/channels.md once grew to 71 MB and
1.26 million lines (a text replace with an empty pattern, commit 477e8d0) and nothing
noticed."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from backend.core.settings import PROJECT_ROOT

GUIDES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
LARGEST_BYTES = 200_000  # the largest guide is about 50 KB
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file(guide: Path) -> None:
    text = INLINE_CODE.sub("", guide.read_text())  # `[Ada](name)` is NLU data, not a link
    for target in LINK.findall(text):
        path = target.split("#", 1)[0]
        if not path or "://" in path or path.startswith("mailto:"):
            continue
        assert (guide.parent / path).exists(), f"{guide.name} links to {target}"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_no_guide_has_run_away(guide: Path) -> None:
    text = guide.read_text()
    assert len(text.encode()) < LARGEST_BYTES, f"{guide.name}: {len(text.encode()):,} bytes"
    headings = Counter(line for line in text.splitlines() if line.startswith("#"))
    repeated = {h: n for h, n in headings.items() if n > 5}
    assert not repeated, f"{guide.name} repeats headings: {repeated}"
