"""benchmarks/rescore.py: a trained fold scored with other scoring keys, its weights untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smokeseg.config.load import load_config
from smokeseg.config.schema import DatasetConfig
from smokeseg.data.formats import load_samples
from smokeseg.data.negatives import WindowSpec
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import ConfigError
from smokeseg.inference.evaluate import evaluate
from smokeseg.inference.predictor import Predictor
from smokeseg.layout import THRESHOLD_NAME
from smokeseg.training import run
from test_training import TINY

ROOT = Path(__file__).resolve().parents[1]
# A seconds-long fold: the training tests' tiny model, one epoch, no test table.
ONE_EPOCH = [*TINY, "training.epochs=1", "dataset.test_dataframe=None"]
# Smoke-free windows that fit the 64x64 frames, for the alarm budget.
SMALL_WINDOWS = WindowSpec(size=16, margin=2, count=4)
FLIP = "prediction.test_time_augmentations=[horizontal_flip]"


@pytest.fixture(scope="module")
def fold(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rescore")
    dataset = generate_demo_dataset(folder / "data", n_train=8, n_test=2, size=(64, 64), seed=5)
    run.train(load_config(dataset, ONE_EPOCH), folder / "exp", progress=False)
    return folder / "exp/fold0"


@pytest.fixture
def rescore(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import rescore

    return rescore


def test_a_variant_is_tuned_in_a_copy_that_scores_with_its_keys(fold: Path, tmp_path: Path, rescore):
    flip = FLIP
    plain = rescore.judge(rescore.fresh_copy(fold, tmp_path / "plain"), [], SMALL_WINDOWS)
    copy = rescore.fresh_copy(fold, tmp_path / "flip")
    flipped = rescore.judge(copy, [flip], SMALL_WINDOWS)
    assert Predictor.from_path(copy).config.prediction.test_time_augmentations == ["horizontal_flip"]
    assert Predictor.from_path(fold).config.prediction.test_time_augmentations == []
    assert not (fold / THRESHOLD_NAME).exists(), "the original fold keeps no tuning of a variant"
    assert flipped["mean_image_IoU_at_recipe_threshold"] != plain["mean_image_IoU_at_recipe_threshold"]
    budget = flipped["alarm_budget_0_05"]
    assert budget["alarming_windows"] <= 0.05 or not budget["budget_kept"]
    assert budget["threshold"] == Predictor.from_path(copy).threshold, "the last tuning is what stays"


def test_keys_that_change_the_model_are_refused(fold: Path, tmp_path: Path, rescore):
    copy = rescore.fresh_copy(fold, tmp_path / "bad")
    with pytest.raises(ConfigError, match="cannot change on a trained model"):
        rescore.judge(copy, ["architecture.backbone=resnet34"])
    with pytest.raises(ConfigError, match="context_pass"):
        rescore.judge(copy, ["image.context_pass=sum"])


def test_test_frames_are_scored_once_and_judged_at_each_point_as_evaluate_would(
    fold: Path, tmp_path: Path, rescore
):
    copy = rescore.fresh_copy(fold, tmp_path / "plain")
    judged = rescore.judge(copy, [], SMALL_WINDOWS)
    data = fold.parents[1] / "data"
    points = rescore.test_at_points(copy, judged, data / "test.pq", data / "images")
    assert set(points) == set(rescore.POINTS)
    for name, point in points.items():
        threshold = judged[name]["threshold"]
        expected = evaluate(copy, data / "test.pq", threshold=threshold, data_folder=data / "images")
        assert point["threshold"] == threshold
        assert point["IoU"] == pytest.approx(expected.segmentation()["IoU"])
        assert point["mean_image_IoU"] == pytest.approx(expected.segmentation()["mean_image_IoU"])
        assert point["region_recall"] == expected.detection()["region_recall"]
        assert point["false_region_frames"] == expected.detection()["false_region_frames"]


def test_a_variant_already_judged_is_not_judged_again(fold: Path, tmp_path: Path, rescore, monkeypatch):
    out = tmp_path / "results.json"
    argv = ["rescore.py", str(fold), str(tmp_path / "copies"), "--variant", "flip", FLIP, "--out", str(out)]
    monkeypatch.setattr(rescore, "judge", lambda copy, overrides: {"overrides_seen": overrides})
    monkeypatch.setattr("sys.argv", argv)
    rescore.main()
    first = json.loads(out.read_text())["variants"]
    assert first["flip"] == {"overrides": [FLIP], "overrides_seen": [FLIP]}

    def refuse(copy, overrides):
        raise AssertionError("judged twice")

    monkeypatch.setattr(rescore, "judge", refuse)
    rescore.main()
    assert json.loads(out.read_text())["variants"] == first
    monkeypatch.setattr("sys.argv", [*argv[:4], "flip", "prediction.test_time_augmentations=[rotate90]"])
    with pytest.raises(AssertionError, match="judged twice"):
        rescore.main()  # other keys under the same name are a new variant
    monkeypatch.setattr("sys.argv", argv)
    out.write_text(json.dumps({"machine": {"cpu": "another"}, "variants": first}))
    with pytest.raises(AssertionError, match="judged twice"):
        rescore.main()  # results of another machine are not reused


def test_crops_scored_once_are_judged_at_each_threshold_as_score_model_judges_one(fold: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from false_alarms import alarms_at_thresholds, score_model

    data = fold.parents[1] / "data"
    frames = load_samples(data / "train.pq", data / "images", DatasetConfig(), require_masks=True)
    negatives, positives = frames[:5], frames[5:]
    sizes = {sample.image_id: sample.load_image().shape[:2] for sample in negatives}
    predictor = Predictor.from_path(fold)
    points = {"own": predictor.threshold, "grid": 0.7, "low": 0.05}
    judged = alarms_at_thresholds(predictor, negatives, sizes, positives, points)
    alone = score_model(str(fold), negatives, sizes, positives)
    assert judged["own"] == alone["operating_point"]
    [at_grid] = [g for g in alone["grid"] if g["threshold"] == 0.7 and g["min_area"] is None]
    assert judged["grid"] == at_grid
    assert judged["low"]["false_positive_rate"] >= judged["grid"]["false_positive_rate"]
    assert judged["low"]["recall"] >= judged["grid"]["recall"]
    assert judged["low"]["false_positive_rate"] > 0, "a low threshold finds regions on these frames"


def test_test_scenes_without_the_crops_that_name_their_windows_is_refused(
    fold: Path, tmp_path: Path, rescore, monkeypatch, capsys
):
    argv = ["rescore.py", str(fold), str(tmp_path), "--variant", "flip", FLIP, "--test-scenes"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit):
        rescore.main()
    assert "--test-scenes needs --crops" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing was judged"
