"""bench/tables.py: the tables in bench/*.md come from the JSON that bench/results.py writes, and
nothing outside the markers changes (issue 13: no figure typed in by hand)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import results  # noqa: E402
import tables  # noqa: E402

DOC = """# Bench
hand-written intro
<!-- results: demo -->
| old | typed | figures |
<!-- /results -->
hand-written outro
<!-- results: missing -->
stale
<!-- /results -->
"""


@pytest.fixture
def written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(results, "RESULTS", tmp_path)
    with results.Result("demo", ["bench/demo.py", "--runs", "3"]) as result:
        result.add("lbgen --help: wall", "python -m lbgen --help", "ms", [30.0, 10.0, 20.0])
        result.add("peak RSS", "getrusage", "MB", [44.5])
        result.notes.append("a note")
    return tmp_path


def test_results_hold_context_and_median_and_spread_not_the_best(written: Path) -> None:
    data = json.loads((written / "demo.json").read_text())
    assert {"commit", "dirty", "date", "machine", "load_before", "load_after"} <= set(data)
    assert data["command"] == "python bench/demo.py --runs 3"
    first = data["figures"][0]
    assert (first["median"], first["min"], first["max"], first["n"]) == (20.0, 10.0, 30.0, 3)
    assert first["path"] == "python -m lbgen --help"


def test_tables_replace_only_the_marked_sections(written: Path) -> None:
    text = tables.regenerate(DOC, written)
    assert "| old | typed | figures |" not in text and "stale" not in text
    assert "hand-written intro" in text and "hand-written outro" in text
    assert "| lbgen --help: wall | 20 ms | 10–30 | 3 | python -m lbgen --help |" in text
    assert "| peak RSS | 44.5 MB |  | 1 | getrusage |" in text
    assert "a note." in text
    assert "No results yet: run the bench to write `bench/results/missing.json`." in text
    assert tables.regenerate(text, written) == text  # stable: a second run changes nothing
