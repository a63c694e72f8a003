"""Rows of ``accuracy_items.py`` judged again on a wider grouped validation: fold 0's 13 smoke-ht frames plus
the SMOKE5K frames of the same fires and scenes (``dataset.extra_in_validation_groups=validate``).

A rows with SMOKE5K frames that only train leaves out of its training the frames that share a fire or
scene with its validation frames (14-44 by seed): frames of the validation scenes that no row trained on.
13 frames a seed rank recipes and place thresholds only roughly; with those frames beside them a fold
validates on 27-57. For each trained row (``WORKDIR/<row>/fold0``, trained already), in a copy of the fold
whose config validates the extra frames and whose validation table lists them:
- ``smokeseg tune-threshold --metric mean_image_IoU`` on the wider validation;
- the wider validation's scores at the recipe's threshold and at the tuned one (IoU, mean per-image IoU,
  false-region frames, region recall; the 13 site frames also alone);
- smoke-ht's 49 test frames at the tuned threshold (reported, never chosen on).
Every row of a seed validates on the same frames: those of ``--reference-row``'s config (a row trained with
``dataset.extra_train_dataframe``); each row's own training frames are checked to hold none of them.

usage: python benchmarks/wide_validation.py WORKDIR --reference-row NAME --rows NAME [NAME ...] --out FILE
       python benchmarks/wide_validation.py --table FILE [FILE ...]   (one FILE a seed: mean ± spread)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
from accuracy_items import _folder_name
from machine import cpu_description
from seeds_table import spread
from smoke_pretrain_table import SMOKE_HT

from smokeseg.config.load import load_config, save_config
from smokeseg.config.schema import ExperimentConfig
from smokeseg.data.formats import Sample
from smokeseg.inference.evaluate import EvaluationResult, evaluate, image_scores
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.threshold import tune_threshold
from smokeseg.layout import CONFIG_NAME, THRESHOLD_NAME, VALIDATION_PREDICTIONS_NAME
from smokeseg.metrics import REGION_TOLERANCE
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


def judge_row(fold: Path, reference: Path, frames: list[Sample], site: int) -> dict[str, object]:
    """The row's model tuned and scored on ``frames`` (the first ``site`` of them smoke-ht's), then tested."""
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
    started = time.perf_counter()
    tuned = tune_threshold(wide, "mean_image_IoU")
    predictor = Predictor.from_path(wide, "auto")
    thresholds = {"recipe": tuned.previous_threshold, "tuned": tuned.threshold}
    rows: dict[str, list[dict[str, object]]] = {name: [] for name in thresholds}
    for prediction in predictor.predict_samples(frames):
        truth = prediction.sample.load_true_mask(*prediction.probabilities.shape)
        for name, threshold in thresholds.items():
            verdict = prediction.verdict(threshold)
            rows[name].append(image_scores(prediction, truth, verdict, threshold, REGION_TOLERANCE))
    validation = {}
    for name, threshold in thresholds.items():
        table = pd.DataFrame(rows[name])
        validation[name] = {
            "threshold": threshold,
            "all": scores(EvaluationResult(str(wide), "", threshold, None, REGION_TOLERANCE, table)),
            "site": scores(EvaluationResult(str(wide), "", threshold, None, REGION_TOLERANCE, table[:site])),
        }
    test = evaluate(wide, SMOKE_HT / "test.pq", data_folder=SMOKE_HT / "gt_testing")
    return {
        "validation_frames": len(frames),
        "site_frames": site,
        "validation": validation,
        "test_at_tuned": {**scores(test), "by_size": test.by_size()},
        "seconds": round(time.perf_counter() - started, 1),
    }


COLUMNS = {
    "val IoU": lambda r: r["validation"]["recipe"]["all"]["IoU"],
    "val IoU/img": lambda r: r["validation"]["recipe"]["all"]["mean_image_IoU"],
    "val false-region frames": lambda r: r["validation"]["recipe"]["all"]["false_region_frames"],
    "val region recall": lambda r: r["validation"]["recipe"]["all"]["region_recall"],
    "val IoU/img at tuned": lambda r: r["validation"]["tuned"]["all"]["mean_image_IoU"],
    "val false-region frames at tuned": lambda r: r["validation"]["tuned"]["all"]["false_region_frames"],
    "val region recall at tuned": lambda r: r["validation"]["tuned"]["all"]["region_recall"],
    "test IoU at tuned": lambda r: r["test_at_tuned"]["IoU"],
    "test IoU/img at tuned": lambda r: r["test_at_tuned"]["mean_image_IoU"],
    "test false-region frames at tuned": lambda r: r["test_at_tuned"]["false_region_frames"],
    "test region recall at tuned": lambda r: r["test_at_tuned"]["region_recall"],
}


def table(seeds: list[dict[str, dict]]) -> str:
    """Each row's mean ± spread over the seed files that hold it, as a Markdown table."""
    header = ["row", "seeds", "validation frames", "tuned threshold", *COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in dict.fromkeys(name for seed in seeds for name in seed):
        rows = [seed[name] for seed in seeds if name in seed]
        frames = " / ".join(str(r["validation_frames"]) for r in rows)
        thresholds = " / ".join(f"{r['validation']['tuned']['threshold']:.2f}" for r in rows)
        cells = [spread([pick(r) for r in rows]) for pick in COLUMNS.values()]
        lines.append("| " + " | ".join([name, str(len(rows)), frames, thresholds, *cells]) + " |")
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
        if row in done:
            continue
        done[row] = judge_row(args.workdir.resolve() / _folder_name(row) / "fold0", reference, frames, site)
        print(row, json.dumps(done[row], indent=1), flush=True)
        write_text_atomic(args.out, json.dumps({"machine": machine, "rows": done}, indent=1) + "\n")


if __name__ == "__main__":
    main()
