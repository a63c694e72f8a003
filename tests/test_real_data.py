"""The reference use case on the real shared datasets, through the command line a user types."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
SMOKE_HT_CONFIG = SHARED / "datasets/smoke-ht/smoke_segmentation.yaml"
SMOKE5K = SHARED / "datasets/smoke5k"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared datasets not found at {SHARED}"),
]


def smokeseg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "smokeseg"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)


def test_data_check_reports_the_reference_dataset(tmp_path: Path):
    result = smokeseg("data", "check", str(SMOKE_HT_CONFIG), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {
        cells[1].strip(): [cell.strip() for cell in cells[2:4]]
        for line in result.stdout.splitlines()
        if len(cells := line.split("│")) >= 4
    }
    assert rows["images"] == ["64", "49"]
    assert rows["problems"] == ["0", "0"]


def test_pretrained_run_offline_stops_at_once_and_names_the_ways_out(tmp_path: Path):
    result = smokeseg("train", str(SMOKE_HT_CONFIG), cwd=tmp_path)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "architecture.pretrained=false" in message and "pretrained_weights" in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "output").exists()


def test_smoke5k_converts_to_parquet_and_back_losslessly(tmp_path: Path):
    table_dir, back_dir = tmp_path / "table", tmp_path / "back"
    assert smokeseg("convert", str(SMOKE5K), str(table_dir), cwd=tmp_path).returncode == 0
    table = pd.read_parquet(table_dir / "train.pq")
    manifest = pd.read_csv(SMOKE5K / "manifest.csv")
    assert len(table) == len(manifest) == 5058
    result = smokeseg(
        "convert",
        str(table_dir / "train.pq"),
        str(back_dir),
        "--data-folder",
        str(table_dir / "images"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for row in manifest.itertuples():
        original = np.array(Image.open(SMOKE5K / row.mask).convert("L")) > 127
        restored = np.array(Image.open(back_dir / row.mask).convert("L")) > 127
        assert np.array_equal(original, restored), row.mask
        assert (SMOKE5K / row.image).read_bytes() == (back_dir / row.image).read_bytes(), row.image


@pytest.mark.slow
def test_reference_config_trains_offline_from_scratch(tmp_path: Path):
    result = smokeseg(
        "train", str(SMOKE_HT_CONFIG), "--set", "architecture.pretrained=false", "--no-progress", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fold_dir = tmp_path / "output/Smoke_segmentation/fold0"
    log = (fold_dir / "logs.log").read_text()
    assert "Number of observations in train dataset: 51" in log
    assert "Number of observations in validation dataset: 13" in log
    assert "Number of observations in test dataset: 49" in log
    metrics = json.loads((fold_dir / "metrics.json").read_text())
    assert metrics["test_observations"] == 49 and 0 <= metrics["test_IoU"] <= 1
    assert (tmp_path / "output/Smoke_segmentation/report.html").is_file()
