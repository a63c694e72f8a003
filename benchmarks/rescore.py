"""Scoring-only variants of a trained model: the same weights, scored with other scoring keys, judged on
the fold's own grouped validation.

For each variant this copies the fold (tuning stores its threshold beside the checkpoint, so the
original keeps its own) and tunes the copy with ``tune_threshold(..., scoring_overrides=...)``, the
library's ``smokeseg tune-threshold --set``: the best mean per-image IoU (its value at the recipe's
threshold too), the highest threshold with region recall >= 0.9 (with the false-region frames there) and
the most smoke found with at most 5% of smoke-free validation windows alarming.
Variants are chosen on validation; ``--test TABLE FOLDER`` also scores labelled test frames once per
variant and reports them at each point, and ``--crops CROPS_DIR WORKDIR`` the smoke-free crops of the
test scenes as ``accuracy_items.py`` judges them (``Judges``: WORKDIR is that run's, for its table of the
training scenes), with smoke-ht's test frames as the positives; ``--test-scenes`` with it scores
SMOKE5K's 631 frames of the test scenes whole and their crop windows (``test_scenes.py``, about 20
minutes a variant on 2 cores, an hour with test-time scales). A variant already in ``--out`` (same keys,
copy still there, same machine) is not judged again.

usage: python benchmarks/rescore.py FOLD OUT_DIR --variant NAME KEY=VALUE [KEY=VALUE ...] [--variant ...]
       [--out results.json] [--test TABLE FOLDER] [--crops CROPS_DIR WORKDIR [--test-scenes]]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accuracy_items import Judges
from false_alarms import alarms_at_thresholds
from machine import cpu_description
from test_scenes import score_test_scenes

from smokeseg.data.negatives import WindowSpec
from smokeseg.inference.evaluate import evaluate_at_thresholds, load_labelled_samples
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.threshold import ALARM_WINDOWS, tune_threshold
from smokeseg.layout import THRESHOLD_NAME
from smokeseg.storage import write_text_atomic


def fresh_copy(fold: Path, target: Path) -> Path:
    """``fold`` copied to ``target`` without a stored operating point: each variant is tuned from the
    recipe's threshold."""
    shutil.rmtree(target, ignore_errors=True)
    return Path(shutil.copytree(fold, target, ignore=shutil.ignore_patterns(THRESHOLD_NAME)))


# The operating points ``judge`` writes, by their key in its result.
POINTS = ("best_mean_image_IoU", "region_recall_0_9", "alarm_budget_0_05")


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


def point_thresholds(variant: dict[str, Any]) -> dict[str, float]:
    """The threshold ``judge`` tuned at each operating point, by the point's key."""
    return {name: variant[name]["threshold"] for name in POINTS}


def test_at_points(copy: Path, variant: dict[str, Any], table: Path, folder: Path) -> dict[str, Any]:
    """The test frames (reported, never chosen on) scored once by the judged copy, as it scores (its
    stored keys), then judged at each operating point's threshold."""
    predictor = Predictor.from_path(copy)
    samples = load_labelled_samples(table, folder, predictor.config.dataset)
    results = evaluate_at_thresholds(
        predictor, samples, point_thresholds(variant), model=str(copy), data=str(table)
    )
    points = {}
    for name, result in results.items():
        segmentation, detection = result.segmentation(), result.detection()
        points[name] = {
            "threshold": result.threshold,
            "IoU": segmentation["IoU"],
            "mean_image_IoU": segmentation["mean_image_IoU"],
            "false_region_frames": detection["false_region_frames"],
            "region_recall": detection["region_recall"],
            "by_size": result.by_size(),
        }
    return points


def crops_at_points(copy: Path, variant: dict[str, Any], judges: Judges) -> dict[str, Any]:
    """The smoke-free crops (reported, never chosen on) scored once by the judged copy, then judged by
    ``predict``'s rule at each operating point's threshold."""
    predictor = Predictor.from_path(copy)
    return alarms_at_thresholds(
        predictor, judges.crops, judges.frame_sizes, judges.test_frames, point_thresholds(variant)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("fold", type=Path, help="a fold folder written by `smokeseg train`")
    parser.add_argument("out_dir", type=Path, help="where the variants' copies go")
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME KEY=VALUE")
    parser.add_argument(
        "--out", type=Path, help="results JSON; a variant it holds with the same keys is not judged again"
    )
    parser.add_argument(
        "--test",
        nargs=2,
        type=Path,
        metavar=("TABLE", "FOLDER"),
        help="also score these labelled frames at each operating point (reported, never chosen on)",
    )
    parser.add_argument(
        "--crops",
        nargs=2,
        type=Path,
        metavar=("CROPS_DIR", "WORKDIR"),
        help="also judge the smoke-free crops of the test scenes at each operating point (reported)",
    )
    parser.add_argument(
        "--test-scenes",
        action="store_true",
        help="with --crops: also score the frames of the test scenes whole at each point (reported)",
    )
    args = parser.parse_args()
    if args.test_scenes and not args.crops:
        parser.error("--test-scenes needs --crops CROPS_DIR WORKDIR (the crop windows it judges)")
    judges = Judges.load(args.crops[0].resolve(), args.crops[1].resolve()) if args.crops else None
    results: dict[str, Any] = {"machine": cpu_description(), "fold": str(args.fold.resolve()), "variants": {}}
    stored = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    if stored.get("machine") == results["machine"]:  # walls from another machine would not compare
        results["variants"] = stored["variants"]
    for name, *overrides in [["as trained"], *args.variant]:
        copy = args.out_dir / name.replace(" ", "_")
        judged = results["variants"].get(name)
        if not (judged and judged["overrides"] == overrides and copy.is_dir()):
            judged = {"overrides": overrides, **judge(fresh_copy(args.fold, copy), overrides)}
        if args.test and "test" not in judged:
            judged["test"] = test_at_points(copy, judged, *args.test)
        if judges and "smoke_free_crops" not in judged:
            judged["smoke_free_crops"] = crops_at_points(copy, judged, judges)
        if judges and args.test_scenes and "test_scenes" not in judged:
            judged["test_scenes"] = score_test_scenes(copy, point_thresholds(judged), judges.test_scenes)
        results["variants"][name] = judged
        print(name, json.dumps(judged), flush=True)
        if args.out:
            write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
