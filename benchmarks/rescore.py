"""Scoring-only variants of a trained model: the same weights, scored with other scoring keys, judged on
the fold's own grouped validation.

A checkpoint scores with the config it was trained with (stored inside it), so changing the fold's
config.yaml changes nothing. For each variant this copies the fold, rewrites the scoring keys stored in
the copy's checkpoint (``--set``, only ``prediction.*`` and ``image.context_pass``, the keys that act at
scoring time alone), and tunes the copy's threshold with ``tune_threshold``: the best mean per-image IoU
(its value at the recipe's threshold too) and the highest threshold with region recall >= 0.9 (with the
false-region frames there). Test frames are left out: variants are chosen on validation.

usage: python benchmarks/rescore.py FOLD OUT_DIR --variant NAME KEY=VALUE [KEY=VALUE ...] [--variant ...]
       [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from machine import cpu_description

from smokeseg.config.load import apply_override, config_from_dict
from smokeseg.inference.threshold import tune_threshold
from smokeseg.layout import THRESHOLD_NAME
from smokeseg.storage import write_text_atomic

SCORING_KEYS = ("prediction.", "image.context_pass")


def copy_with_scoring(fold: Path, target: Path, overrides: list[str]) -> Path:
    """``fold`` copied to ``target`` with ``overrides`` in its checkpoint's stored config."""
    wrong = [override for override in overrides if not override.startswith(SCORING_KEYS)]
    if wrong:
        raise SystemExit(f"{wrong}: only scoring keys ({', '.join(SCORING_KEYS)}) leave the weights valid")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(fold, target)
    (target / THRESHOLD_NAME).unlink(missing_ok=True)
    checkpoint_path = target / "checkpoint.ckpt"
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    raw = checkpoint["hyper_parameters"]["config"]
    for override in overrides:
        apply_override(raw, override)
    # Stored as training stores it; a bad value fails here, naming its key.
    checkpoint["hyper_parameters"]["config"] = config_from_dict(raw, str(checkpoint_path)).model_dump(
        mode="json"
    )
    torch.save(checkpoint, checkpoint_path)
    return target


def judge(fold: Path) -> dict[str, Any]:
    started = time.perf_counter()
    best = tune_threshold(fold, "mean_image_IoU")
    recall = tune_threshold(fold, min_region_recall=0.9)
    return {
        "mean_image_IoU_at_recipe_threshold": best.before,
        "best_mean_image_IoU": {"threshold": best.threshold, "value": best.after},
        "region_recall_0_9": {
            "threshold": recall.threshold,
            "region_recall": recall.after,
            "false_region_frames": recall.false_region_share(recall.threshold),
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
        copy = copy_with_scoring(args.fold, args.out_dir / name.replace(" ", "_"), overrides)
        results["variants"][name] = {"overrides": overrides, **judge(copy)}
        print(name, json.dumps(results["variants"][name]), flush=True)
        if args.out:
            write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
