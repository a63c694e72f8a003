"""False alarms: how often a model calls smoke on smoke-free crops of real camera frames, at what recall.

Negatives are crops cut from SMOKE5K real frames, at least ``--margin`` pixels away from any smoke in
the mask, taken from the frames no pretraining saw (the fires and camera scenes of smoke-ht, minus
smoke-ht's own images: see ``smoke_pretrain_table.split_real_frames``). Positives are smoke-ht's 49
test frames, which all hold smoke. Each image gets the alarm rule ``predict`` applies
(``smokeseg.inference.scoring.gated_verdict``): a region above the threshold of at least a minimum area,
and, for a model with a classification head and ``prediction.classification_threshold``, the head's
probability at least that.

The crops are written once, as PNG (no recompression) plus a Hydrogen Torch table with empty masks,
the frame each came from, its size, and the window's top-left corner there (``test_scenes.py`` finds
each crop's window inside its scored frame). A model trained at native resolution scores a crop at the scale
it gives that whole frame (``image.long_side`` enlarges a 640x480 frame 2x, so its crops too), not as
if the crop were a frame of its own.

For each model: the false-positive rate and recall at its operating point (its threshold, the default
minimum area), then, over a grid of thresholds, minimum areas (and head thresholds), the lowest
false-positive rate that keeps at least that recall; and how the frame score (``scoring.frame_score``)
separates crops from smoke frames: its AUROC and reliability table.

usage: python benchmarks/false_alarms.py CROPS_DIR MODEL [MODEL ...] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from machine import cpu_description
from smoke_pretrain_table import SMOKE5K, SMOKE_HT, split_real_frames

from smokeseg.config.schema import DatasetConfig
from smokeseg.data.formats import Sample, load_samples, parallel_map, samples_from_folders
from smokeseg.data.negatives import smoke_free_windows
from smokeseg.inference.predictor import Predictor
from smokeseg.inference.scoring import frame_score, gated_verdict
from smokeseg.metrics import auroc, reliability
from smokeseg.storage import atomic_path, write_bytes_atomic, write_text_atomic

TABLE_NAME = "smoke_free.csv"
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
MIN_AREAS = (None, 64, 128, 256, 512)  # None: the default (0.01% of the image, at least 16 pixels)
# The classification head's veto (None: none), tried for models that have a head.
IMAGE_THRESHOLDS = (None, 0.3, 0.5, 0.7, 0.9)


def write_crops(folder: Path, size: int, margin: int, per_frame: int, seed: int) -> Path:
    """Cut the smoke-free crops into ``folder/images`` and list them in ``folder/smoke_free.csv``."""
    frames = split_real_frames(samples_from_folders(SMOKE5K)).unseen_by_pretraining
    (folder / "images").mkdir(parents=True, exist_ok=True)

    def crops_of(item: tuple[int, Sample]) -> list[dict[str, object]]:
        index, sample = item
        image = sample.load_image()
        mask = sample.load_true_mask(*image.shape[:2])
        rng = np.random.default_rng([seed, index])
        rows = []
        for k, (y, x) in enumerate(smoke_free_windows(mask, size, margin, per_frame, rng)):
            name = f"{Path(sample.image_id).stem}_{k}.png"
            crop = cv2.cvtColor(image[y : y + size, x : x + size], cv2.COLOR_RGB2BGR)
            write_bytes_atomic(folder / "images" / name, cv2.imencode(".png", crop)[1].tobytes())
            rows.append(
                {
                    "image_id": name,
                    "frame_height": image.shape[0],
                    "frame_width": image.shape[1],
                    "frame_id": sample.image_id,
                    "y": y,
                    "x": x,
                    "size": size,
                }
            )
        return rows

    table = pd.DataFrame([row for rows in parallel_map(crops_of, list(enumerate(frames))) for row in rows])
    table = table.assign(class_id="smoke", rle_mask="")
    target = folder / TABLE_NAME
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)
    print(f"{len(table)} smoke-free crops from {len(frames)} frames -> {target}")
    return target


Scored = tuple[np.ndarray, float | None]  # a probability map, and the classification head's probability


def scored_images(predictor: Predictor, samples: list[Sample]) -> list[Scored]:
    return [(p.probabilities, p.image_probability) for p in predictor.predict_samples(samples)]


FrameSizes = dict[str, tuple[int, int]]  # crop image id -> (height, width) of the frame it was cut from


def scored_crops(predictor: Predictor, crops: list[Sample], frames: FrameSizes) -> list[Scored]:
    """Crops scored at their frame's scale (``Predictor.score_crops``)."""
    images = [crop.load_image() for crop in crops]
    return predictor.score_crops(images, [frames[crop.image_id] for crop in crops])


def alarm_rates(
    negatives: list[Scored],
    positives: list[Scored],
    threshold: float,
    min_area: int | None,
    image_threshold: float | None,
) -> dict[str, Any]:
    """The rule's settings with the share of negatives and of positives that raise an alarm by
    ``predict``'s rule (the head's veto included, where the model has one and ``image_threshold`` is set)."""

    def alarms(scored: list[Scored]) -> float:
        return float(
            np.mean([gated_verdict(m, threshold, min_area, p, image_threshold).smoke for m, p in scored])
        )

    return {
        "threshold": threshold,
        "min_area": min_area,
        "image_threshold": image_threshold,
        "false_positive_rate": alarms(negatives),
        "recall": alarms(positives),
    }


def alarms_at_thresholds(
    predictor: Predictor,
    negatives: list[Sample],
    frames: FrameSizes,
    positives: list[Sample],
    thresholds: Mapping[str, float],
) -> dict[str, dict[str, object]]:
    """The crops and the smoke frames scored once, then judged by ``predict``'s rule at each threshold
    (name -> threshold; the default minimum area and the model's own head threshold): a model tuned at
    several operating points costs one scoring pass, not one a point."""
    negative_scores = scored_crops(predictor, negatives, frames)
    positive_scores = scored_images(predictor, positives)
    gate = predictor.image_threshold
    return {
        name: alarm_rates(negative_scores, positive_scores, threshold, None, gate)
        for name, threshold in thresholds.items()
    }


def score_model(
    model: str, negatives: list[Sample], frames: FrameSizes, positives: list[Sample]
) -> dict[str, object]:
    predictor = Predictor.from_path(model, "auto")
    started = time.perf_counter()
    negative_scores = scored_crops(predictor, negatives, frames)
    positive_scores = scored_images(predictor, positives)
    seconds = time.perf_counter() - started
    gate = predictor.image_threshold
    operating_point = alarm_rates(negative_scores, positive_scores, predictor.threshold, None, gate)
    has_head = negative_scores[0][1] is not None
    grid = [
        alarm_rates(negative_scores, positive_scores, t, a, g)
        for t in THRESHOLDS
        for a in MIN_AREAS
        for g in (IMAGE_THRESHOLDS if has_head else (None,))
    ]
    # The operating point itself is a candidate: a tuned threshold between grid values may beat them all.
    recall = operating_point["recall"]
    at_equal_recall = [operating_point, *(g for g in grid if g["recall"] >= recall)]
    best = min(at_equal_recall, key=lambda g: (g["false_positive_rate"], -g["recall"]))
    scores = [float(frame_score(float(m.max()), p)) for m, p in (*negative_scores, *positive_scores)]
    labels = [False] * len(negative_scores) + [True] * len(positive_scores)
    return {
        "model": model,
        "negatives": len(negatives),
        "positives": len(positives),
        "operating_point": operating_point,
        "lowest_false_positive_rate_at_equal_recall": best,
        "frame_score_AUROC": auroc(labels, scores),
        "frame_score_reliability": reliability(labels, scores),
        "grid": grid,
        "scoring_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("crops", type=Path, help="folder for the smoke-free crops (made on first use)")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels")
    parser.add_argument("--margin", type=int, default=32, help="distance kept from any smoke, in pixels")
    parser.add_argument("--per-frame", type=int, default=1, help="crops per frame")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    table = args.crops / TABLE_NAME
    if not table.is_file():
        write_crops(args.crops, args.size, args.margin, args.per_frame, args.seed)
    negatives = load_samples(table, args.crops / "images", DatasetConfig(), require_masks=True)
    positives = load_samples(
        SMOKE_HT / "test.pq", SMOKE_HT / "gt_testing", DatasetConfig(), require_masks=True
    )
    listed = pd.read_csv(table)
    frames = dict(
        zip(listed["image_id"], zip(listed["frame_height"], listed["frame_width"], strict=True), strict=True)
    )
    machine = cpu_description()
    print(json.dumps(machine, indent=1), flush=True)
    results = [score_model(model, negatives, frames, positives) for model in args.models]
    text = json.dumps({"machine": machine, "models": results}, indent=1)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(json.dumps([{k: v for k, v in r.items() if k != "grid"} for r in results], indent=1))


if __name__ == "__main__":
    main()
