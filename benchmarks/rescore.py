"""Scoring-only variants of a trained model: the same weights, scored with other scoring keys, judged on
the fold's own grouped validation.

For each variant this copies the fold (tuning stores its threshold beside the checkpoint, so the
original keeps its own) and tunes the copy with ``tune_threshold(..., scoring_overrides=...)``, the
library's ``smokeseg tune-threshold --set``: the best mean per-image IoU (its value at the recipe's
threshold too), the highest threshold with region recall >= 0.9 (with the false-region frames there) and
the most smoke found with at most 5% of smoke-free validation windows alarming.
Test frames are left out: variants are chosen on validation.

usage: python benchmarks/rescore.py FOLD OUT_DIR --variant NAME KEY=VALUE [KEY=VALUE ...] [--variant ...]
       [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machine import cpu_description

from smokeseg.data.negatives import WindowSpec
from smokeseg.inference.threshold import ALARM_WINDOWS, tune_threshold
from smokeseg.layout import THRESHOLD_NAME
from smokeseg.storage import write_text_atomic


def fresh_copy(fold: Path, target: Path) -> Path:
    """``fold`` copied to ``target`` without a stored operating point: each variant is tuned from the
    recipe's threshold."""
    shutil.rmtree(target, ignore_errors=True)
    return Path(shutil.copytree(fold, target, ignore=shutil.ignore_patterns(THRESHOLD_NAME)))


def judge(
    fold: Path, scoring_overrides: Sequence[str], windows: WindowSpec = ALARM_WINDOWS
) -> dict[str, Any]:
    """The fold at the three operating points of ``accuracy_items.py``, on its validation frames
    (``windows``: the smoke-free windows the alarm budget counts)."""
    started = time.perf_counter()
    best = tune_threshold(fold, "mean_image_IoU", scoring_overrides=scoring_overrides)
    recall = tune_threshold(fold, min_region_recall=0.9, scoring_overrides=scoring_overrides)
    budget = tune_threshold(fold, alarm_budget=0.05, windows=windows, scoring_overrides=scoring_overrides)
    return {
        "mean_image_IoU_at_recipe_threshold": best.before,
        "best_mean_image_IoU": {"threshold": best.threshold, "value": best.after},
        "region_recall_0_9": {
            "threshold": recall.threshold,
            "region_recall": recall.after,
            "false_region_frames": recall.false_region_share(recall.threshold),
        },
        "alarm_budget_0_05": {
            "threshold": budget.threshold,
            "region_recall": budget.after,
            "budget_kept": budget.target_met,
            "alarming_windows": budget.window_alarm_share(budget.threshold),
            "false_region_frames": budget.false_region_share(budget.threshold),
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("fold", type=Path, help="a fold folder written by `smokeseg train`")
    parser.add_argument("out_dir", type=Path, help="where the variants' copies go")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME KEY=VALUE")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": cpu_description(), "fold": str(args.fold.resolve()), "variants": {}}
    for name, *overrides in [["as trained"], *args.variant]:
        copy = fresh_copy(args.fold, args.out_dir / name.replace(" ", "_"))
        results["variants"][name] = {"overrides": overrides, **judge(copy, overrides)}
        print(name, json.dumps(results["variants"][name]), flush=True)
        if args.out:
            write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
