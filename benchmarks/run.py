"""smokeseg beside the plain smp script, in one run on one machine: accuracy and wall time side by side.

Each suite trains its runs one after the other (never two at once: they would share the cores), then
compares smoke-ht's test IoU (dataset-level and mean per image, at each image's own size) and wall time
of each smokeseg run with its baseline run of ``../shared/baselines/smp_script.py`` in the same suite.

usage: python benchmarks/run.py SUITE [--out benchmarks/results-SUITE.json] [--init-from DIR] [--keep DIR]
  reference: the seed config, 5 epochs, from scratch (resnet34) and from ImageNet EfficientNet-Lite0
  accuracy:  recipes/fast.yaml from ImageNet-Lite0 and from a smoke-pretrained model (--init-from)
             against smp_script.py lite0 20 epochs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from machine import cpu_description

from smokeseg.layout import TEST_PREDICTIONS_NAME
from smokeseg.metrics import summarize_counts
from smokeseg.storage import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SEED_CONFIG = SHARED / "datasets/smoke-ht/smoke_segmentation.yaml"
FAST = ROOT / "recipes/fast.yaml"
BASELINE = SHARED / "baselines/smp_script.py"
SMOKESEG = str(Path(sys.executable).parent / "smokeseg")


@dataclass(frozen=True)
class Run:
    name: str
    baseline_args: tuple[str, ...] = ()  # smp_script.py arguments before OUT_JSON
    config: Path | None = None  # or a smokeseg config, with overrides
    overrides: tuple[str, ...] = ()
    compare_to: str = ""  # the baseline run's name


SUITES: dict[str, list[Run]] = {
    "reference": [
        Run("smp_script resnet34 scratch 5", ("resnet34", "scratch", "5")),
        Run(
            "smokeseg seed config, scratch",
            config=SEED_CONFIG,
            overrides=("architecture.pretrained=false",),
            compare_to="smp_script resnet34 scratch 5",
        ),
        Run("smp_script lite0 5", ("lite0", "lite0", "5")),
        Run(
            "smokeseg seed config, lite0",
            config=SEED_CONFIG,
            overrides=("architecture.backbone=efficientnet_lite0",),
            compare_to="smp_script lite0 5",
        ),
    ],
    "accuracy": [
        Run("smp_script lite0 20", ("lite0", "lite0", "20")),
        Run("smokeseg fast.yaml, ImageNet-Lite0 start", config=FAST, compare_to="smp_script lite0 20"),
        Run(
            "smokeseg fast.yaml, smoke-pretrained start",
            config=FAST,
            overrides=("architecture.init_from={init}",),
            compare_to="smp_script lite0 20",
        ),
    ],
}


def _timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - started


def _test_detection(table: Path) -> dict[str, float]:
    """F-beta (dataset-level) and image-level recall from a test predictions table: every smoke-ht test
    frame holds smoke, so recall is the share of frames the alarm rule flags."""
    rows = pd.read_parquet(table)
    f_beta = summarize_counts(rows[["tp", "fp", "fn"]].to_numpy(), ["F-beta"])["F-beta"]
    return {"test_F_beta": f_beta, "test_image_recall": float(rows["smoke"].mean())}


def run_one(run: Run, workdir: Path, init_from: Path | None) -> dict[str, Any]:
    out = workdir / run.name.replace(" ", "_").replace(",", "")
    if run.config is None:
        seconds = _timed([sys.executable, str(BASELINE), *run.baseline_args, f"{out}.json"], workdir)
        result = json.loads(Path(f"{out}.json").read_text())
        scores = {
            "validation_IoU": result["val_iou_last"],
            "test_IoU": result["test_dataset_iou"],
            "test_mean_image_IoU": result["test_mean_image_iou"],
        }
        command = f"python ../{BASELINE.relative_to(SHARED.parent)} {' '.join(run.baseline_args)} out.json"
    else:
        overrides = [o.format(init=init_from) for o in (*run.overrides, "environment.seed=0")]
        sets = [part for override in overrides for part in ("--set", override)]
        arguments = ["train", str(run.config), *sets, "--output-dir", str(out), "--no-progress"]
        seconds = _timed([SMOKESEG, *arguments], workdir)
        metrics = json.loads((out / "fold0/metrics.json").read_text())
        scores = {key: metrics.get(key) for key in ("validation_IoU", "test_IoU", "test_mean_image_IoU")}
        scores.update(_test_detection(out / "fold0" / TEST_PREDICTIONS_NAME))
        command = "smokeseg " + " ".join(arguments[:-3]).replace(str(ROOT) + "/", "").replace(
            str(SHARED.parent) + "/", "../"
        )
    return {"run": run.name, "command": command, "wall_s": round(seconds, 1), **scores}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--init-from", type=Path, help="smoke-pretrained experiment folder (accuracy suite)")
    parser.add_argument("--keep", type=Path, help="keep each run's outputs in this folder (else a temp one)")
    args = parser.parse_args()
    if not SEED_CONFIG.is_file() or not BASELINE.is_file():
        sys.exit(f"needs {SEED_CONFIG} and {BASELINE} beside the checkout")
    machine = cpu_description()
    print(json.dumps(machine, indent=1), flush=True)
    runs = SUITES[args.suite]
    if args.init_from is None:
        runs = [run for run in runs if not any("{init}" in o for o in run.overrides)]
    elif not args.init_from.exists():
        sys.exit(f"--init-from {args.init_from} does not exist: train the smoke-pretraining recipes first")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        # Absolute: each run works in its own folder, not the one --init-from was typed in.
        init_from = args.init_from.resolve() if args.init_from else None
        results = [run_one(run, workdir.resolve(), init_from) for run in runs]
    by_name = {result["run"]: result for result in results}
    for run, result in zip(runs, results, strict=True):
        if run.compare_to:
            baseline = by_name[run.compare_to]
            result["wall_time_ratio"] = round(result["wall_s"] / baseline["wall_s"], 2)
            for key in ("test_IoU", "test_mean_image_IoU"):
                result[f"{key}_minus_baseline"] = round(result[key] - baseline[key], 4)
    out = args.out or ROOT / f"benchmarks/results-{args.suite}.json"
    text = json.dumps({"machine": machine, "runs": results}, indent=1)
    write_text_atomic(out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
