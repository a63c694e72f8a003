"""smoke-ht's test cameras at a larger scale: SMOKE5K's frames of the test scenes, scored whole as a camera
sends them, with the smoke-free crops judged as windows of those frames.

smoke-ht's 49 test frames are few for an alarm rate, and ``false_alarms.py`` scores each smoke-free crop
alone: the native pass only, at a crop's own minimum region area, which is not what a deployed context
recipe sees. SMOKE5K holds 600-odd labelled frames more of the fires and camera scenes of smoke-ht's test
frames (``smoke_pretrain_table.split_real_frames``: ``test_scenes``), which no run trains on. A model
scores them whole, as ``predict`` does (both passes of a context recipe; the verdict's default minimum
region area of the whole frame), and at each threshold this reports:
- IoU (dataset-level, mean per image, by smoke size), region recall, the share of frames with a false
  region and false regions per frame (``evaluate``'s scores);
- ``crop_window_alarm``: the share of the smoke-free crops cut from these frames (``false_alarms.py``: at
  least 32 px from any smoke) whose window holds a false region of the whole frame's verdict: the crop
  alarm rate as deployment meets it;
- ``crop_window_any_region``: the share whose window holds any verdict region (a plume's region grown
  more than 32 px past the smoke, or merged with a cloud, counts too): how ``tune-threshold
  --alarm-budget`` counts windows of the validation frames.
These are test cameras: reported, never chosen on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from false_alarms import TABLE_NAME
from smoke_pretrain_table import SMOKE5K, split_real_frames

from smokeseg.data.formats import Sample, samples_from_folders
from smokeseg.inference.evaluate import EvaluationResult, image_scores
from smokeseg.inference.predictor import Predictor
from smokeseg.metrics import REGION_TOLERANCE, false_region_pixels, windows_holding

Window = tuple[int, int, int]  # top, left, side, in the frame's own pixels


@dataclass(frozen=True)
class TestScenes:
    """The frames, and the smoke-free crop windows of each (by the frame's image id)."""

    frames: list[Sample]
    windows: dict[str, list[Window]]

    @classmethod
    def load(cls, crops: Path) -> TestScenes:
        listed = pd.read_csv(crops / TABLE_NAME)
        if not {"frame_id", "y", "x", "size"} <= set(listed.columns):
            raise SystemExit(
                f"{crops / TABLE_NAME} has no window columns (frame_id, y, x, size): it was written before "
                "false_alarms.py recorded them. Write the crops again into a new folder "
                "(python benchmarks/false_alarms.py NEW_FOLDER MODEL); they come out the same."
            )
        frames = split_real_frames(samples_from_folders(SMOKE5K)).test_scenes
        ids = {frame.image_id for frame in frames}
        windows: dict[str, list[Window]] = {}
        for crop in listed[listed["frame_id"].isin(ids)].itertuples():
            windows.setdefault(crop.frame_id, []).append((crop.y, crop.x, crop.size))
        return cls(frames, windows)

    @property
    def crops(self) -> int:
        return sum(map(len, self.windows.values()))


RECIPE_THRESHOLD = "the recipe's threshold"


def score_test_scenes(model: Path, operating_points: dict[str, float], scenes: TestScenes) -> dict[str, Any]:
    """The model at its own threshold and at each operating point (name -> threshold), judged on the whole
    frames and their crop windows; the model scores every frame once."""
    predictor = Predictor.from_path(model, "auto")
    thresholds = {RECIPE_THRESHOLD: predictor.threshold, **operating_points}
    started = time.perf_counter()
    rows: dict[str, list[dict[str, object]]] = {name: [] for name in thresholds}
    window_alarms: dict[str, list[bool]] = {name: [] for name in thresholds}
    window_regions: dict[str, list[bool]] = {name: [] for name in thresholds}
    for prediction in predictor.predict_samples(scenes.frames):
        truth = prediction.sample.load_true_mask(*prediction.probabilities.shape)
        for name, threshold in thresholds.items():
            verdict = prediction.verdict(threshold)
            rows[name].append(image_scores(prediction, truth, verdict, threshold, REGION_TOLERANCE))
            false = false_region_pixels(verdict.regions, truth)
            windows = scenes.windows.get(prediction.sample.image_id, [])
            window_alarms[name] += windows_holding(false, windows)
            window_regions[name] += windows_holding(verdict.regions, windows)
    points = {}
    for name, threshold in thresholds.items():
        result = EvaluationResult(
            str(model), str(SMOKE5K), threshold, None, REGION_TOLERANCE, pd.DataFrame(rows[name])
        )
        segmentation, detection = result.segmentation(), result.detection()
        points[name] = {
            "threshold": threshold,
            "IoU": segmentation["IoU"],
            "mean_image_IoU": segmentation["mean_image_IoU"],
            "by_size": result.by_size(),
            "false_region_frames": detection["false_region_frames"],
            "false_regions_per_frame": detection["false_regions_per_frame"],
            "region_recall": detection["region_recall"],
            "crop_window_alarm": sum(window_alarms[name]) / max(len(window_alarms[name]), 1),
            "crop_window_any_region": sum(window_regions[name]) / max(len(window_regions[name]), 1),
        }
    return {
        "frames": len(scenes.frames),
        "crop_windows": scenes.crops,
        "points": points,
        "scoring_seconds": round(time.perf_counter() - started, 1),
    }
