"""smokeseg beside the plain smp script, in one run on one machine: accuracy and wall time as ratios.

Each pair trains the same recipe twice, once with ``smokeseg train`` on the reference Hydrogen Torch
config and once with ``../shared/baselines/smp_script.py``, then compares the smoke-ht test IoU
(dataset-level and mean per image, at each image's own size) and the wall time.

usage: python benchmarks/run.py [--pairs scratch,lite0] [--epochs 5] [--out benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONFIG = SHARED / "datasets/smoke-ht/smoke_segmentation.yaml"
BASELINE = SHARED / "baselines/smp_script.py"

# name -> (smokeseg overrides, smp_script arguments before EPOCHS)
PAIRS: dict[str, tuple[list[str], list[str]]] = {
    "scratch": (["architecture.pretrained=false"], ["resnet34", "scratch"]),
    "lite0": (
        ["architecture.backbone=efficientnet_lite0", "architecture.pretrained=true"],
        ["lite0", "lite0"],
    ),
}


def _timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - started


def run_pair(name: str, epochs: int, workdir: Path) -> dict[str, object]:
    overrides, baseline_args = PAIRS[name]
    run_dir = workdir / f"smokeseg-{name}"
    sets = [
        arg for o in [*overrides, f"training.epochs={epochs}", "environment.seed=0"] for arg in ("--set", o)
    ]
    smokeseg_s = _timed(
        [
            str(Path(sys.executable).parent / "smokeseg"),
            "train",
            str(CONFIG),
            *sets,
            "--output-dir",
            str(run_dir),
            "--no-progress",
        ],
        workdir,
    )
    metrics = json.loads((run_dir / "fold0/metrics.json").read_text())
    baseline_json = workdir / f"baseline-{name}.json"
    baseline_s = _timed(
        [sys.executable, str(BASELINE), *baseline_args, str(epochs), str(baseline_json)], workdir
    )
    baseline = json.loads(baseline_json.read_text())
    return {
        "pair": name,
        "epochs": epochs,
        "smokeseg": {
            "validation_IoU": metrics.get("validation_IoU"),
            "test_IoU": metrics.get("test_IoU"),
            "test_mean_image_IoU": metrics.get("test_mean_image_IoU"),
            "wall_s": round(smokeseg_s, 1),
        },
        "smp_script": {
            "validation_IoU": baseline["val_iou_last"],
            "test_IoU": baseline["test_dataset_iou"],
            "test_mean_image_IoU": baseline["test_mean_image_iou"],
            "wall_s": round(baseline_s, 1),
        },
        "wall_time_ratio": round(smokeseg_s / baseline_s, 2),
        "test_IoU_difference": round(metrics.get("test_IoU", 0) - baseline["test_dataset_iou"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", default="scratch,lite0")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results.json")
    args = parser.parse_args()
    if not CONFIG.is_file() or not BASELINE.is_file():
        sys.exit(f"needs {CONFIG} and {BASELINE} beside the checkout")
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_pair(name, args.epochs, Path(tmp)) for name in args.pairs.split(",")]
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
