"""File names of a training output folder and of a scoring package, in one place.

Training writes them; the report, threshold tuning, the Predictor and the package builder read them.
This module imports nothing, so readers do not pull in Lightning to learn a file name.
"""

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
