"""Rows of ``accuracy_items.py`` judged again on a wider grouped validation: fold 0's 13 smoke-ht frames plus
the SMOKE5K frames of the same fires and scenes (``dataset.extra_in_validation_groups=validate``).

A row with SMOKE5K frames that only train leaves out of its training the frames that share a fire or
scene with its validation frames (14-44 by seed): frames of the validation scenes that no row trained on.
13 frames a seed rank recipes and place thresholds only roughly; with those frames beside them a fold
validates on 27-57. For each trained row (``WORKDIR/<row>/fold0``, trained already), in a copy of the fold
whose config validates the extra frames and whose validation table lists them:
- the wider validation's scores at the recipe's threshold (IoU, mean per-image IoU, false-region frames,
  region recall; the 13 site frames also alone);
- the operating points of ``accuracy_items.py`` tuned on the wider validation (``smokeseg tune-threshold``:
  best mean per-image IoU; the highest threshold with region recall >= 0.9), with the same scores there
  and smoke-ht's 49 test frames at each (reported, never chosen on).
Every row of a seed validates on the same frames: those of ``--reference-row``'s config (a row trained with
``dataset.extra_train_dataframe``); each row's own training frames are checked to hold none of them.

usage: python benchmarks/wide_validation.py WORKDIR --reference-row NAME --rows NAME [NAME ...] --out FILE
       python benchmarks/wide_validation.py --table FILE [FILE ...]   (one FILE a seed: mean ± spread)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from accuracy_items import _folder_name
from machine import cpu_description
from seeds_table import markdown_row, spread
from smoke_pretrain_table import SMOKE_HT

from smokeseg.config.load import load_config, save_config
from smokeseg.config.schema import ExperimentConfig
from smokeseg.data.formats import Sample
from smokeseg.inference.evaluate import EvaluationResult, evaluate, evaluate_at_thresholds
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.threshold import tune_threshold
from smokeseg.layout import CONFIG_NAME, THRESHOLD_NAME, VALIDATION_PREDICTIONS_NAME
from smokeseg.storage import write_text_atomic
from smokeseg.training.run import ExperimentData

WIDE_FOLD = "fold0-wide-validation"


def wide_config(fold: Path) -> ExperimentConfig:
    """The fold's config with its held-out extra frames validated."""
    return load_config(fold / CONFIG_NAME, ["dataset.extra_in_validation_groups=validate"])


def validation_frames(reference: Path) -> tuple[list[Sample], int]:
    """The wider validation of ``reference``'s fold 0, and how many of its frames are the site's."""
    config = wide_config(reference)
    data = ExperimentData.load(config)
    return data.fold(config, 0).validation, len(data.fold(load_config(reference / CONFIG_NAME), 0).validation)


def trained_frames(fold: Path) -> set[str]:
    """The file names of the frames the row's fold 0 trained on, found as training found them."""
    config = load_config(fold / CONFIG_NAME)
    return {Path(sample.image_id).name for sample in ExperimentData.load(config).fold(config, 0).train}


def scores(result: EvaluationResult) -> dict[str, float | None]:
    segmentation, detection = result.segmentation(), result.detection()
    return {
        "IoU": segmentation["IoU"],
        "mean_image_IoU": segmentation["mean_image_IoU"],
        "false_region_frames": detection["false_region_frames"],
        "region_recall": detection["region_recall"],
    }


# Operating points chosen on the wider validation: name -> ``tune_threshold`` options.
POINTS: dict[str, dict[str, Any]] = {
    "best mean per-image IoU": {"metric": "mean_image_IoU"},
    "region recall >= 0.9": {"min_region_recall": 0.9},
}


def wide_fold(fold: Path, reference: Path, frames: list[Sample], site: int) -> Path:
    """A copy of the row's fold whose config validates the held-out extra frames and whose validation
    table lists ``frames``; refused if the row validated on other site frames or trained on any of them."""
    own = pd.read_parquet(fold / VALIDATION_PREDICTIONS_NAME)["image_id"].astype(str).tolist()
    if own != [sample.image_id for sample in frames[:site]]:
        raise SystemExit(f"{fold} validated on other site frames than {reference}: not the same fold")
    seen = trained_frames(fold) & {Path(sample.image_id).name for sample in frames}
    if seen:
        raise SystemExit(f"{fold} trained on {len(seen)} of the validation frames (first: {sorted(seen)[0]})")
    wide = fold.with_name(WIDE_FOLD)
    shutil.rmtree(wide, ignore_errors=True)
    shutil.copytree(fold, wide, ignore=shutil.ignore_patterns("*.parquet", THRESHOLD_NAME, "report*"))
    model_config = load_config(fold / CONFIG_NAME)
    dataset = wide_config(reference).dataset.model_copy(update={"folds": model_config.dataset.folds})
    save_config(model_config.model_copy(update={"dataset": dataset}), wide / CONFIG_NAME)
    pd.DataFrame({"image_id": [sample.image_id for sample in frames]}).to_parquet(
        wide / VALIDATION_PREDICTIONS_NAME, index=False
    )
    return wide


def validation_scores(
    model: Path, frames: list[Sample], site: int, thresholds: dict[str, float]
) -> dict[str, dict[str, object]]:
    """The wider validation's scores at each threshold (all frames, and the ``site`` first alone)."""
    predictor = Predictor.from_path(model, "auto")
    results = evaluate_at_thresholds(predictor, frames, thresholds, model=str(model), data="")
    return {
        name: {
            "threshold": result.threshold,
            "all": scores(result),
            "site": scores(dataclasses.replace(result, images=result.images[:site])),
        }
        for name, result in results.items()
    }


def judge_row(
    fold: Path, reference: Path, frames: list[Sample], site: int, done: dict[str, Any]
) -> dict[str, Any]:
    """The row's model on ``frames`` (the first ``site`` of them smoke-ht's) at its recipe's threshold and
    at each of ``POINTS`` tuned on them, and on the test frames there; what ``done`` holds is kept."""
    wide = wide_fold(fold, reference, frames, site)
    started = time.perf_counter()
    recipe = load_config(wide / CONFIG_NAME).prediction.probability_threshold
    tuned = {}
    for name, options in POINTS.items():
        if name not in done.get("points", {}):
            (wide / THRESHOLD_NAME).unlink(missing_ok=True)  # each point tuned from the recipe's threshold
            tuned[name] = tune_threshold(wide, **options).threshold
    needed = {name: tuned[name] for name in tuned} | ({} if "recipe" in done else {"recipe": recipe})
    validation = validation_scores(wide, frames, site, needed)
    points = dict(done.get("points", {}))
    for name, threshold in tuned.items():
        test = evaluate(wide, SMOKE_HT / "test.pq", threshold=threshold, data_folder=SMOKE_HT / "gt_testing")
        points[name] = {**validation[name], "test": {**scores(test), "by_size": test.by_size()}}
    return {
        "validation_frames": len(frames),
        "site_frames": site,
        "recipe": done.get("recipe") or validation["recipe"],
        "points": points,
        "seconds": round(time.perf_counter() - started + done.get("seconds", 0), 1),
    }


COLUMNS = {
    "val IoU": lambda r: r["recipe"]["all"]["IoU"],
    "val IoU/img": lambda r: r["recipe"]["all"]["mean_image_IoU"],
    "val false-region frames": lambda r: r["recipe"]["all"]["false_region_frames"],
    "val region recall": lambda r: r["recipe"]["all"]["region_recall"],
}
POINT_COLUMNS = {
    "val IoU/img": lambda p: p["all"]["mean_image_IoU"],
    "val false-region frames": lambda p: p["all"]["false_region_frames"],
    "val region recall": lambda p: p["all"]["region_recall"],
    "test IoU": lambda p: p["test"]["IoU"],
    "test IoU/img": lambda p: p["test"]["mean_image_IoU"],
    "test IoU large": lambda p: p["test"]["by_size"].get("large", {}).get("IoU"),
    "test false-region frames": lambda p: p["test"]["false_region_frames"],
    "test region recall": lambda p: p["test"]["region_recall"],
}


def table(seeds: list[dict[str, dict]]) -> str:
    """Each row at its recipe's threshold, then at each operating point: mean ± spread over the seed files
    that hold it, as Markdown tables."""
    names = list(dict.fromkeys(name for seed in seeds for name in seed))
    header = ["row", "seeds", "validation frames", *COLUMNS]
    lines = [markdown_row(header), "|" + "---|" * len(header)]
    for name in names:
        rows = [seed[name] for seed in seeds if name in seed]
        frames = " / ".join(str(r["validation_frames"]) for r in rows)
        cells = [spread([pick(r) for r in rows]) for pick in COLUMNS.values()]
        lines.append(markdown_row([name, str(len(rows)), frames, *cells]))
    header = ["row", "operating point (chosen on the wider validation)", "seeds", "threshold", *POINT_COLUMNS]
    lines += ["", markdown_row(header), "|" + "---|" * len(header)]
    for name in names:
        rows = [seed[name] for seed in seeds if name in seed]
        for point in POINTS:
            found = [r["points"][point] for r in rows if point in r["points"]]
            if found:
                thresholds = " / ".join(f"{p['threshold']:.2f}" for p in found)
                cells = [spread([pick(p) for p in found]) for pick in POINT_COLUMNS.values()]
                lines.append(markdown_row([name, point, str(len(found)), thresholds, *cells]))
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--table"]:
        print(table([json.loads(Path(path).read_text())["rows"] for path in sys.argv[2:]]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--reference-row", required=True, help="a row trained with extra_train_dataframe")
    parser.add_argument("--rows", nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    machine = cpu_description()
    print(json.dumps(machine, indent=1), flush=True)
    reference = args.workdir.resolve() / _folder_name(args.reference_row) / "fold0"
    frames, site = validation_frames(reference)
    print(f"{len(frames)} validation frames, {site} of them smoke-ht's", flush=True)
    done = json.loads(args.out.read_text())["rows"] if args.out.is_file() else {}
    for row in args.rows:
        if row in done and all(point in done[row]["points"] for point in POINTS):
            continue
        fold = args.workdir.resolve() / _folder_name(row) / "fold0"
        done[row] = judge_row(fold, reference, frames, site, done.get(row, {}))
        print(row, json.dumps(done[row], indent=1), flush=True)
        write_text_atomic(args.out, json.dumps({"machine": machine, "rows": done}, indent=1) + "\n")


if __name__ == "__main__":
    main()
