"""The benchmarks' SMOKE5K tables keep the frames they are judged on out of training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path, PurePosixPath

import pandas as pd
import pytest

from smokeseg.config.schema import DatasetConfig
from smokeseg.data.formats import load_samples, samples_from_folders
from smokeseg.data.groups import assign_groups

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SMOKE5K = SHARED / "datasets/smoke5k"
SMOKE_HT = (
    SHARED / "datasets/smoke-ht/data/anon/Smoke_segmentation/content/drive/MyDrive/BushFire/Image_segment"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared datasets not found at {SHARED}"),
]


def _table(tmp_path: Path, real: str) -> pd.DataFrame:
    out = tmp_path / f"{real}.pq"
    command = [sys.executable, str(ROOT / "benchmarks/smoke_pretrain_table.py"), str(out), "--real", real]
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    return pd.read_parquet(out)


def test_extra_fine_tuning_frames_share_no_scene_with_a_test_frame(tmp_path: Path, monkeypatch):
    training_scenes = _table(tmp_path, "training-scenes")
    outside = _table(tmp_path, "outside")
    smoke_ht = {name: set(pd.read_parquet(SMOKE_HT / f"{name}.pq")["image_id"]) for name in ("train", "test")}
    names = [PurePosixPath(i).name for i in (*training_scenes["image_id"], *outside["image_id"])]
    assert len(training_scenes) and len(outside)
    assert len(set(names)) == len(names), "a frame is in both tables"
    assert not set(names) & (smoke_ht["train"] | smoke_ht["test"]), "a smoke-ht image is in a table"

    # Grouped again, from scratch, together with smoke-ht's test frames from smoke-ht's own folder and
    # the SMOKE5K frames of their scenes that test_scenes.py judges on: no extra frame may land in a
    # test frame's fire or camera scene.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from smoke_pretrain_table import split_real_frames

    wanted = set(training_scenes["image_id"]) | set(outside["image_id"])
    frames = samples_from_folders(SMOKE5K)
    extra = [s for s in frames if s.image_id in wanted]
    test = load_samples(SMOKE_HT / "test.pq", SMOKE_HT / "gt_testing", DatasetConfig(), require_masks=False)
    test += split_real_frames(frames).test_scenes
    assert len(extra) == len(wanted)
    assert not wanted & {s.image_id for s in test}, "a judged frame is in a training table"
    groups = assign_groups(extra + test, "fire_sequence")
    assert not set(groups[: len(extra)]) & set(groups[len(extra) :])


def test_the_wider_validation_shares_no_scene_with_the_fold_training_frames(tmp_path: Path):
    """``extra_in_validation_groups=validate`` on the real tables: fold 0 validates on more frames than
    smoke-ht's own, and none of its validation frames shares a fire or scene with a frame it trains on."""
    from smokeseg.config.load import load_config
    from smokeseg.training.run import ExperimentData

    extra = tmp_path / "extra.pq"
    command = [sys.executable, str(ROOT / "benchmarks/smoke_pretrain_table.py"), str(extra)]
    subprocess.run(
        [*command, "--real", "training-scenes", "outside"], check=True, capture_output=True, timeout=600
    )
    overrides = [
        "dataset.group_rule=fire_sequence",
        "environment.seed=0",
        f"dataset.extra_train_dataframe={extra}",
        f"dataset.extra_data_folder={SMOKE5K / 'images'}",
    ]
    folds = {}
    for rule in ("leave_out", "validate"):
        config = load_config(
            ROOT / "recipes/fast.yaml", [*overrides, f"dataset.extra_in_validation_groups={rule}"]
        )
        folds[rule] = ExperimentData.load(config).fold(config, 0)
    site, wider = folds["leave_out"].validation, folds["validate"].validation
    assert [s.image_id for s in wider[: len(site)]] == [s.image_id for s in site]
    assert len(wider) > len(site)
    train = folds["validate"].train
    assert [s.image_id for s in train] == [s.image_id for s in folds["leave_out"].train]
    groups = assign_groups(train + wider, "fire_sequence")
    assert not set(groups[: len(train)]) & set(groups[len(train) :])
