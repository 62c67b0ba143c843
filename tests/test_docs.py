"""The chapters are committed executed: no error output, no progress bar, the figures each is meant to show; and the committed outputs
survive nbdev_clean unchanged (CI cleans every notebook and fails on a change)."""

import json

import pytest

from conftest import REPO
from mimeo_nb.docs import CHAPTER_FIGURES, check_chapter


@pytest.mark.parametrize("name", list(CHAPTER_FIGURES))
def test_committed_chapter_shows_what_it_is_meant_to(name):
    assert check_chapter(REPO / "nbs" / f"{name}.ipynb") == []


def test_committed_outputs_hold_no_timings_or_widgets():
    "Outputs that change on every run (timings, widget state, execution counts) are not committed."
    import re

    timing = re.compile(r"\b\d+(\.\d+)?\s?(s|ms|seconds)\b(?!\w)|\bit/s\b|images/s|tiles/s")
    found = []
    for name in CHAPTER_FIGURES:
        nb = json.loads((REPO / "nbs" / f"{name}.ipynb").read_text())
        assert "widgets" not in nb.get("metadata", {}), name
        for i, c in enumerate(nb["cells"]):
            for o in c.get("outputs", []):
                text = "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                if timing.search(text):
                    found.append(f"{name} cell {i}: {timing.search(text).group(0)!r} in {text[:120]!r}")
    assert not found, found
