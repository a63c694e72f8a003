"""Mean and spread over seeds of ``accuracy_items.py`` results: the Markdown tables of RESULTS.md.

Each results file is one seed (``accuracy_items.py --seed S --out FILE``); a row is averaged over the
files that hold it, as mean ± sample standard deviation (one file: its value).

usage: python benchmarks/seeds_table.py RESULTS.json [RESULTS.json ...] [--rows NAME ...]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

Pick = Callable[[dict], float | None]

ROW_COLUMNS: dict[str, Pick] = {
    "val IoU": lambda r: r["validation"]["IoU"],
    "val IoU/img": lambda r: r["validation"]["mean_image_IoU"],
    "val false-region frames": lambda r: r["validation"]["false_region_frames"],
    "val region recall": lambda r: r["validation"]["region_recall"],
    "test IoU": lambda r: r["test"]["IoU"],
    "test IoU/img": lambda r: r["test"]["mean_image_IoU"],
    "test IoU large": lambda r: r["test_by_size"].get("large", {}).get("IoU"),
    "test false-region frames": lambda r: r["test"]["false_region_frames"],
    "test region recall": lambda r: r["test"]["region_recall"],
    "smoke-free crops alarm": lambda r: r["smoke_free_crops"]["false_positive_rate"],
}
POINT_COLUMNS: dict[str, Pick] = {
    "val region recall": lambda p: p["validation"].get("region_recall"),
    "val false-region frames": lambda p: p["validation"].get("false_region_frames"),
    "val alarming windows": lambda p: p["validation"].get("window_alarm"),
    "test IoU": lambda p: p["test"]["IoU"],
    "test IoU/img": lambda p: p["test"]["mean_image_IoU"],
    "test IoU small": lambda p: p["test_by_size"].get("small", {}).get("IoU"),
    "test IoU large": lambda p: p["test_by_size"].get("large", {}).get("IoU"),
    "test false-region frames": lambda p: p["test"]["false_region_frames"],
    "test region recall": lambda p: p["test"]["region_recall"],
    "smoke-free crops alarm": lambda p: p["smoke_free_crops"]["false_positive_rate"],
}

SCENE_COLUMNS: dict[str, Pick] = {
    "IoU": lambda p: p["IoU"],
    "IoU/img": lambda p: p["mean_image_IoU"],
    "IoU small": lambda p: p["by_size"].get("small", {}).get("IoU"),
    "IoU large": lambda p: p["by_size"].get("large", {}).get("IoU"),
    "false-region frames": lambda p: p["false_region_frames"],
    "region recall": lambda p: p["region_recall"],
    "crop windows alarm (whole-frame scoring)": lambda p: p["crop_window_alarm"],
    "crop windows with any region": lambda p: p.get("crop_window_any_region"),
}


def spread(values: list[float | None]) -> str:
    """``mean ± std`` of the values that exist (sample standard deviation), one value as it is."""
    kept = [v for v in values if v is not None]
    if not kept:
        return "-"
    if len(kept) == 1:
        return f"{kept[0]:.3f}"
    return f"{np.mean(kept):.3f} ± {np.std(kept, ddof=1):.3f}"


def markdown_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def tables(seeds: list[dict[str, dict]], names: list[str]) -> str:
    """The rows at the recipe's threshold, then each row at its operating points, then on the test
    scenes' frames."""
    header = ["row", "seeds", *ROW_COLUMNS, "wall"]
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    for name in names:
        rows = [seed[name] for seed in seeds if name in seed]
        cells = [spread([pick(r) for r in rows]) for pick in ROW_COLUMNS.values()]
        wall = " / ".join(f"{r['wall_s']:.0f}" for r in rows) + " s"
        lines.append(markdown_row([name, str(len(rows)), *cells, wall]))
    header = ["row", "operating point (chosen on grouped validation)", "seeds", "threshold", *POINT_COLUMNS]
    lines += ["", markdown_row(header), "|" + "---|" * len(header)]
    for name in names:
        rows = [seed[name] for seed in seeds if "operating_points" in seed.get(name, {})]
        for point in rows[0]["operating_points"] if rows else []:
            points = [r["operating_points"][point] for r in rows]
            thresholds = " / ".join(f"{p['threshold']:.2f}" for p in points)
            cells = [spread([pick(p) for p in points]) for pick in POINT_COLUMNS.values()]
            lines.append(markdown_row([name, point, str(len(points)), thresholds, *cells]))
    return "\n".join(lines) + _scenes_table(seeds, names)


def _scenes_table(seeds: list[dict[str, dict]], names: list[str]) -> str:
    """Each row on SMOKE5K's frames of the test scenes (``test_scenes.py``), where measured."""
    rows_of = {
        name: [seed[name]["test_scenes"] for seed in seeds if "test_scenes" in seed.get(name, {})]
        for name in names
    }
    if not any(rows_of.values()):
        return ""
    header = ["row", "threshold", "seeds", "frames / crop windows", *SCENE_COLUMNS]
    lines = ["", "", markdown_row(header), "|" + "---|" * len(header)]
    for name, rows in rows_of.items():
        for point in rows[0]["points"] if rows else []:
            points = [r["points"][point] for r in rows if point in r["points"]]
            thresholds = " / ".join(f"{p['threshold']:.2f}" for p in points)
            cells = [spread([pick(p) for p in points]) for pick in SCENE_COLUMNS.values()]
            size = f"{rows[0]['frames']} / {rows[0]['crop_windows']}"
            lines.append(markdown_row([name, f"{point} ({thresholds})", str(len(points)), size, *cells]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--rows", nargs="*", help="row names, in this order (default: every row)")
    args = parser.parse_args()
    seeds = [{r["row"]: r for r in json.loads(path.read_text())["rows"]} for path in args.results]
    names = args.rows or list(dict.fromkeys(name for seed in seeds for name in seed))
    print(tables(seeds, names))


if __name__ == "__main__":
    main()
