"""The docs stay true to the code: docs/flags.md is what the parsers say, and every relative link in the README
and the guides leads to a file (and an anchor there, when it names one)."""
import dataclasses
import fnmatch
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


NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\d.])")  # 5,000: one
RESULTS = ROOT / "bench" / "results"


def _numbers(text):
    """The numbers written in a text: (value, half the last written digit's unit, followed by %), thousands
    separators dropped."""
    for m in NUMBER.finditer(text):
        s = m.group().replace(",", "").replace("−", "-")
        mantissa, _, exponent = s.lower().partition("e")
        decimals = len(mantissa.partition(".")[2])
        yield float(s), 0.5 * 10.0 ** (int(exponent or 0) - decimals), text[m.end():m.end() + 2].strip().startswith("%")


def test_measured_figures_are_what_their_results_files_say():
    """The docs mark a measured figure by linking it to the results file it comes from (`bench/results/`, or a
    record such as a shipped evaluator's JSON): `[0.523](bench/results/default-mnist-5000-eval.txt)`. Each number
    in such a link's text must stand in that file, to the decimals it is written with (a percentage also as a
    fraction). What this cannot see: a figure written without its link, one
    derived from others (a ratio), or a file that holds the number for another reason."""
    checked, wrong = 0, []
    for page in PAGES:
        for text, target in re.findall(r"\[([^\]]+)\]\(([^)\s]+)\)", page.read_text()):
            path = (page.parent / target.partition("#")[0]).resolve()
            if path.suffix not in (".txt", ".csv", ".json", ".jsonl") or not NUMBER.search(text):
                continue  # a link to a page, a picture or a folder
            content = re.sub(r"(\d)x\b", r"\1 x", path.read_text())  # 5.4x: a number too
            in_file = [value for value, _, _ in _numbers(content)]
            in_file += [60 * float(m) + float(s) for m, s in re.findall(r"\b(\d+)m([\d.]+)s\b", content)]  # time's
            for value, half_unit, percent in _numbers(text):
                near = lambda f: abs(f - value) <= half_unit * (1 + 1e-9)
                if not any(near(f) or (percent and near(100 * f)) for f in in_file):
                    wrong.append(f"{page.relative_to(ROOT)}: {text} is not in {path.name}")
            checked += 1
    assert not wrong, wrong
    assert checked >= 40  # the docs do mark their figures


def test_every_results_file_is_quoted_by_the_docs():
    """A file in bench/results/ that no page names (or matches with a pattern such as `ttq24-*.csv`) backs no
    figure: quote it or remove it."""
    text = "\n".join(page.read_text() for page in PAGES)
    named = set(re.findall(r"[\w.-]*[A-Za-z][\w.-]*(?:\*[\w.*-]*|\.(?:txt|csv|json|jsonl))", text))
    unquoted = [f.name for f in sorted(RESULTS.iterdir())
                if not any(fnmatch.fnmatch(f.name, n.rsplit("/", 1)[-1]) for n in named)]
    assert not unquoted, unquoted


def test_the_resume_table_names_every_flag_and_refuses_what_a_run_is_born_with():
    from digitgan.config import IDENTITY_FIELDS, TrainConfig, flag

    rows = {cells[1].strip(): set(re.findall(r"`(--[a-z0-9-]+)", cells[2]))
            for line in (ROOT / "docs" / "training.md").read_text().splitlines()
            if (cells := line.split("|")) and len(cells) == 4 and cells[1].strip() in ("take effect", "refused (one-line error, exit 2)")}
    refused, effect = rows["refused (one-line error, exit 2)"] - {"--fresh", "--checkpoint-dir"}, rows["take effect"]
    assert refused == {f"--{flag(name)}" for name in IDENTITY_FIELDS}
    every = {f"--{flag(f.name)}" for f in dataclasses.fields(TrainConfig)} - {"--checkpoint-dir"}
    assert effect | refused == every and not effect & refused
