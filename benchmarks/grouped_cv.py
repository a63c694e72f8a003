"""Grouped 5-fold cross-validation of recipes/accurate.yaml on SMOKE5K's 1,058 real frames, in a budget
that fits a 2-core CPU in under an hour: the honest score of a recipe on fires and cameras it never saw.

Folds are grouped by fire and camera scene (``dataset.group_rule: fire_sequence``, in the recipe), so no
fold validates on a frame whose neighbours it trained on. The budget (``BUDGET``): frames brought to a
640 px longer side instead of 1280 (a quarter of the pixels), 3 epochs instead of 60, no ONNX package;
everything else is the recipe's. The start is ImageNet-Lite0: the smoke-pretrained model has seen some
of these frames. Extra ``--set`` overrides are what a row changes (the same budget before and after).

usage: python benchmarks/grouped_cv.py EXPERIMENT_DIR [--set KEY=VALUE ...] [--out results.json]
An EXPERIMENT_DIR whose five folds are done is only summarised: per fold, then mean and spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from machine import cpu_description
from run import ROOT, SMOKESEG, _timed
from smoke_pretrain_table import SMOKE5K

from smokeseg.storage import write_text_atomic

ACCURATE = ROOT / "recipes/accurate.yaml"
FOLDS = 5
BUDGET = (
    "image.long_side=640",
    "training.epochs=3",
    "training.evaluation_epochs=3",
    "training.build_scoring_pipelines=false",
)
SCORES = ("IoU", "mean_image_IoU", "false_region_frames", "false_regions_per_frame", "region_recall")


def summarize(experiment: Path) -> dict[str, object]:
    """Each fold's validation scores, and their mean and (population) standard deviation."""
    folds = [json.loads((experiment / f"fold{k}/metrics.json").read_text()) for k in range(FOLDS)]
    per_fold = [
        {"fold": k, "validation_observations": m["validation_observations"]}
        | {name: m.get(f"validation_{name}") for name in SCORES}
        for k, m in enumerate(folds)
    ]
    spread = {}
    for name in SCORES:
        values = [fold[name] for fold in per_fold if fold[name] is not None]
        spread[name] = (
            {"mean": statistics.fmean(values), "std": statistics.pstdev(values)} if values else None
        )
    return {"folds": per_fold, "summary": spread}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    experiment = args.experiment.resolve()
    machine = cpu_description()
    print(json.dumps(machine, indent=1), flush=True)
    seconds = None
    if not all((experiment / f"fold{k}/metrics.json").is_file() for k in range(FOLDS)):
        table = experiment.parent / "smoke5k-real.pq"
        if not table.is_file():
            _timed(
                [
                    sys.executable,
                    str(ROOT / "benchmarks/smoke_pretrain_table.py"),
                    str(table),
                    "--real",
                    "all",
                ],
                ROOT,
            )
        overrides = [
            f"dataset.train_dataframe={table}",
            f"dataset.data_folder={SMOKE5K / 'images'}",
            "dataset.test_dataframe=None",
            f"dataset.folds={list(range(FOLDS))}",
            *BUDGET,
            *args.overrides,
        ]
        sets = [part for override in overrides for part in ("--set", override)]
        started = time.perf_counter()
        _timed(
            [SMOKESEG, "train", str(ACCURATE), *sets, "--output-dir", str(experiment), "--no-progress"], ROOT
        )
        seconds = round(time.perf_counter() - started, 1)
    result = {
        "machine": machine,
        "experiment": str(experiment),
        "budget": list(BUDGET),
        "overrides": args.overrides,
        "wall_s": seconds,
        **summarize(experiment),
    }
    text = json.dumps(result, indent=1)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
