"""The docs stay true to the code: docs/flags.md is what the parsers say, and every relative link in the README
and the guides leads to a file (and an anchor there, when it names one)."""
import re
from pathlib import Path

import dcgan

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_docs_flags_md_is_what_the_parsers_say():
    assert (ROOT / "docs" / "flags.md").read_text() == dcgan.flags_markdown(), "docs/flags.md is stale: run `make flags`"


def _anchors(page):
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", page.read_text(), re.M)}


def test_every_relative_link_leads_somewhere():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s) and the like
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
    assert len(PAGES) >= 12 and len((ROOT / "README.md").read_text().splitlines()) <= 150
