"""The benchmarks' Markdown tables, printed from the committed results: every row fills every column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def accuracy_items(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import accuracy_items

    return accuracy_items


def _cells(line: str) -> int:
    return len(line.strip().strip("|").split(" | "))


@pytest.mark.parametrize("results", ["results-alarm-budget.json", "results-items-more2.json"])
def test_accuracy_items_tables_have_a_cell_for_every_column(accuracy_items, results: str):
    rows = json.loads((ROOT / "benchmarks" / results).read_text())["rows"]
    for table in (accuracy_items._table(rows), accuracy_items._operating_table(rows)):
        header, rule, *lines = table.splitlines()
        assert lines, "the results hold rows"
        assert {_cells(line) for line in lines} == {_cells(header)} == {rule.count("---|")}
