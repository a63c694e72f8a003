"""File names of a training output folder and of a scoring package, in one place.

Training writes them; the report, threshold tuning, the Predictor and the package builder read them.
This module imports only pathlib, so readers do not pull in Lightning to learn a file name.
"""

from pathlib import Path

CONFIG_NAME = "config.yaml"
LOG_NAME = "logs.log"
CHARTS_NAME = "charts.json"
METRICS_NAME = "metrics.json"
CHECKPOINT_NAME = "checkpoint.ckpt"
LAST_CHECKPOINT_NAME = "last.ckpt"
VALIDATION_PREDICTIONS_NAME = "validation_predictions.parquet"
TEST_PREDICTIONS_NAME = "test_predictions.parquet"
THRESHOLD_NAME = "threshold.json"  # written by `smokeseg tune-threshold` beside each checkpoint
SCORING_PACKAGE_NAME = "scoring_package"
PACKAGE_MODEL_NAME = "model.onnx"
LOCK_NAME = ".lock"  # held (flock) by the run writing an experiment folder


def unused_run_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ...: the first that holds no run's config, so a command that
    always writes to one place (``smokeseg demo``) keeps earlier runs instead of being refused by them."""
    candidate, number = base, 1
    while (candidate / CONFIG_NAME).exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate
