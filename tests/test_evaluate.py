"""Evaluation metrics on hand-made masks, `evaluate` on every data shape, and threshold tuning."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from smokeseg.cli import app
from smokeseg.config.load import load_config
from smokeseg.config.schema import DatasetConfig
from smokeseg.data.formats import Sample, convert_dataset, convert_table_to_folders, load_samples
from smokeseg.data.negatives import WindowSpec
from smokeseg.data.rle import rle_encode
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import ConfigError, DataError, ModelError
from smokeseg.inference import threshold as tuning
from smokeseg.inference.evaluate import evaluate, evaluate_at_thresholds, load_labelled_samples
from smokeseg.inference.predictor import Predictor, TileSpec
from smokeseg.inference.scoring import Prediction, dataset_scores, prediction_row, smoke_verdict
from smokeseg.inference.threshold import (
    DEFAULT_GRID,
    alarm_windows,
    choose_operating_point,
    choose_within_alarm_budget,
    region_grid,
    tune_threshold,
)
from smokeseg.layout import THRESHOLD_NAME
from smokeseg.metrics import (
    COUNT_METRICS,
    REGION_TOLERANCE,
    auroc,
    detection_scores,
    false_region_pixels,
    iou_from_counts,
    mean_absolute_error,
    region_outcome,
    region_scores,
    scores_by_size,
    size_bins,
    summarize_counts,
    threshold_counts,
    windows_holding,
)
from smokeseg.training import run
from test_training import TINY

# --- metrics on hand-made masks -----------------------------------------------------------------------

TRUTH = np.array(
    [
        [1, 1, 1, 0],
        [1, 1, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ],
    bool,
)
# 4 of the 6 smoke pixels found, 1 false pixel: tp=4, fp=1, fn=2.
PROBABILITIES = np.array(
    [
        [0.9, 0.8, 0.2, 0.0],
        [0.7, 0.6, 0.4, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.55],
    ],
    np.float32,
)


def test_scores_on_a_4x4_example_match_the_hand_computed_values():
    counts = threshold_counts(PROBABILITIES, TRUTH, [0.5])
    assert counts.tolist() == [[4, 1, 2]]
    scores = summarize_counts(counts, list(COUNT_METRICS))
    assert scores["precision"] == pytest.approx(4 / 5)
    assert scores["recall"] == pytest.approx(4 / 6)
    # F-beta with beta^2 = 0.3: 1.3 * P * R / (0.3 * P + R)
    assert scores["F-beta"] == pytest.approx(1.3 * 0.8 * (2 / 3) / (0.3 * 0.8 + 2 / 3))
    assert scores["IoU"] == pytest.approx(4 / 7)
    assert scores["Dice"] == pytest.approx(8 / 11)
    assert scores["mean_image_F-beta"] == scores["F-beta"], "one image: both views agree"


def test_empty_masks_score_one_and_a_miss_scores_zero():
    both_empty, missed, false_alarm = [0, 0, 0], [0, 0, 5], [0, 3, 0]
    for name, metric in COUNT_METRICS.items():
        assert metric(np.array([both_empty]))[0] == 1.0, name
        assert metric(np.array([missed, false_alarm])).tolist() == [0.0, 0.0], name


def test_mean_absolute_error_is_per_pixel_distance_to_the_mask():
    probabilities = np.array([[0.2, 0.9], [0.5, 0.0]], np.float32)
    truth = np.array([[0, 1], [1, 0]], bool)
    assert mean_absolute_error(probabilities, truth) == pytest.approx((0.2 + 0.1 + 0.5 + 0.0) / 4)


def test_threshold_counts_equal_thresholding_at_every_grid_value():
    rng = np.random.default_rng(0)
    probabilities = rng.random((30, 40)).astype(np.float32)
    grid = np.round(np.linspace(0, 1, 101), 2)
    probabilities[0, :4] = grid[[0, 37, 50, 100]]  # values exactly on a threshold
    truth = rng.random((30, 40)) > 0.6
    expected = [
        [(p & truth).sum(), (p & ~truth).sum(), (~p & truth).sum()]
        for p in (probabilities > t for t in grid.astype(np.float32))
    ]
    assert threshold_counts(probabilities, truth, grid).tolist() == expected


def test_size_bins_small_under_1_percent_medium_up_to_10_large_from_10():
    fractions = [0.0, 0.005, 0.01, 0.05, 0.0999, 0.10, 0.6]
    assert size_bins(fractions).tolist() == ["", "small", "medium", "medium", "medium", "large", "large"]
    counts = np.array([[0, 0, 0], [1, 0, 1], [1, 1, 0], [3, 0, 0], [1, 0, 0], [2, 2, 0], [5, 0, 5]])
    by_size = scores_by_size(counts, fractions)
    assert by_size["small"] == {"images": 1, "IoU": 0.5, "mean_image_IoU": 0.5}
    assert by_size["medium"]["images"] == 3 and by_size["medium"]["IoU"] == pytest.approx(5 / 6)
    assert by_size["large"]["images"] == 2 and by_size["large"]["IoU"] == pytest.approx(7 / 14)


def test_image_level_detection_and_false_positive_rate_on_smoke_free_images():
    truth = [False, False, False, False, True, True]
    predicted = [True, False, False, False, True, False]
    scores = detection_scores(truth, predicted)
    assert scores["false_positive_rate"] == pytest.approx(1 / 4)
    assert scores["precision"] == pytest.approx(1 / 2)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert (scores["false_alarms"], scores["missed"]) == (1, 1)
    assert detection_scores([True], [True])["false_positive_rate"] is None, "no smoke-free image to judge"


# The case: smoke on the left, a cloud on the right that the model takes for smoke.
FRAME_TRUTH = np.zeros((40, 60), bool)
FRAME_TRUTH[10:20, 5:15] = True


def _frame(*boxes: tuple[slice, slice]) -> np.ndarray:
    probabilities = np.full(FRAME_TRUTH.shape, 0.1, np.float32)
    for box in boxes:
        probabilities[box] = 0.9
    return probabilities


CLOUD = (slice(25, 35), slice(40, 50))
NEAR_SMOKE = (slice(10, 20), slice(17, 22))  # starts 2 pixels right of the smoke


def test_a_cloud_on_a_smoke_frame_is_a_false_region_not_a_hit():
    cloud_only = smoke_verdict(_frame(CLOUD), 0.5)
    assert cloud_only.smoke, "the frame raises an alarm, which frame-level recall counts as found"
    assert region_outcome(cloud_only.regions, FRAME_TRUTH) == (1, False)
    both = smoke_verdict(_frame(CLOUD, NEAR_SMOKE), 0.5)
    assert region_outcome(both.regions, FRAME_TRUTH) == (1, True), "2 px off is within the default 3"
    assert region_outcome(both.regions, FRAME_TRUTH, tolerance=1) == (2, False)
    assert region_outcome(both.regions, np.zeros_like(FRAME_TRUTH)) == (2, False), "no smoke: all false"
    assert region_outcome(smoke_verdict(_frame(), 0.5).regions, FRAME_TRUTH) == (0, False)


def test_false_region_pixels_are_the_cloud_not_the_region_on_the_smoke():
    both = smoke_verdict(_frame(CLOUD, NEAR_SMOKE), 0.5)
    expected = np.zeros_like(FRAME_TRUTH)
    expected[CLOUD] = True
    assert np.array_equal(false_region_pixels(both.regions, FRAME_TRUTH), expected)
    assert np.array_equal(false_region_pixels(both.regions, FRAME_TRUTH, tolerance=1), both.regions > 0), (
        "1 px tolerance: the region 2 px off the smoke is false too"
    )
    assert not false_region_pixels(smoke_verdict(_frame(), 0.5).regions, FRAME_TRUTH).any()


def test_a_window_alarms_when_the_cloud_reaches_into_it_by_one_pixel():
    cloud = false_region_pixels(smoke_verdict(_frame(CLOUD, NEAR_SMOKE), 0.5).regions, FRAME_TRUTH)
    windows = [(0, 25, 15), (20, 30, 11), (20, 30, 10), (0, 0, 60)]
    # (20, 30, 11) ends at column 40, the cloud's first; (20, 30, 10) stops one short of it.
    assert windows_holding(cloud, windows) == [False, True, False, True]
    assert windows_holding(cloud, []) == []


def test_verdict_regions_are_the_boxed_regions_only():
    probabilities = _frame(CLOUD)
    probabilities[2:4, 2:4] = 0.9  # a 4-pixel speck: no region
    verdict = smoke_verdict(probabilities, 0.5)
    assert (verdict.regions > 0).sum() == verdict.boxes[0][4] == 100
    assert (verdict.regions[CLOUD] > 0).all()


def test_auroc_equals_counting_every_pair():
    rng = np.random.default_rng(1)
    labels = rng.random(60) > 0.6
    scores = np.round(rng.random(60), 1)  # many ties, which count half
    pairs = scores[labels][:, None] - scores[~labels][None, :]
    expected = ((pairs > 0).sum() + 0.5 * (pairs == 0).sum()) / pairs.size
    assert auroc(labels, scores) == pytest.approx(expected)
    assert auroc([True, False], [0.9, 0.1]) == 1.0 and auroc([True, False], [0.1, 0.9]) == 0.0
    assert auroc([True, True], [0.2, 0.3]) is None, "no smoke-free frame to rank against"


def test_region_scores_on_four_frames():
    scores = region_scores(
        true_smoke=[True, True, False, False],
        region_hit=[True, False, False, False],
        false_regions=[0, 2, 1, 0],
        frame_scores=[0.9, 0.8, 0.85, 0.1],
    )
    assert scores == {
        "region_recall": 0.5,
        "false_region_frames": 0.5,
        "false_regions_per_frame": 0.75,
        "image_AUROC": 0.75,
    }
    assert region_scores([False], [False], [0], [0.2])["region_recall"] is None


def test_prediction_rows_carry_the_region_view_and_dataset_scores_summarise_it():
    sample = Sample("frame", store=None, group="frame", rles=(rle_encode(FRAME_TRUTH, "F"),))
    image = np.zeros((*FRAME_TRUTH.shape, 3), np.uint8)
    rows = [
        prediction_row(Prediction(sample, image, _frame(CLOUD)), 0.5),
        prediction_row(Prediction(sample, image, _frame(CLOUD, NEAR_SMOKE)), 0.5),
    ]
    assert [(row["false_regions"], row["region_hit"]) for row in rows] == [(1, False), (1, True)]
    scores = dataset_scores(pd.DataFrame(rows))
    assert scores["region_recall"] == 0.5 and scores["false_regions_per_frame"] == 1.0
    assert scores["false_region_frames"] == 1.0 and scores["image_AUROC"] is None


# --- evaluate and tune on a tiny trained model ----------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(demo config, experiment folder): one tiny fold trained once for every test below."""
    root = tmp_path_factory.mktemp("evaluate")
    config_path = generate_demo_dataset(root / "data", n_train=12, n_test=4, size=(64, 96), seed=3)
    run.train(load_config(config_path, [*TINY, "training.epochs=1"]), root / "exp", progress=False)
    return config_path, root / "exp"


def _comparable(result) -> dict:
    return {key: value for key, value in result.to_dict().items() if key != "data"}


def test_config_table_folder_and_zip_give_identical_numbers(trained, tmp_path: Path):
    config_path, experiment = trained
    data = config_path.parent
    folders = convert_table_to_folders(
        data / "test.pq", data / "images", tmp_path / "folders", DatasetConfig()
    )
    archive = shutil.make_archive(str(tmp_path / "set"), "zip", folders)
    converted = convert_dataset(folders, tmp_path / "converted")[0].parent  # a table beside images/
    sources = [
        (config_path, None),
        (data / "test.pq", data / "images"),
        (data / "test.pq", None),  # its images are found beside it
        (folders, None),
        (archive, None),
        (converted, None),
    ]
    results = [evaluate(experiment, source, threshold=0.5, data_folder=folder) for source, folder in sources]
    reference = _comparable(results[0])
    assert reference["images"] == 4
    assert set(reference["segmentation"]) >= {
        "IoU",
        "mean_image_IoU",
        "F-beta",
        "precision",
        "mean_image_MAE",
    }
    assert set(reference["by_size"]) == {"small", "medium", "large"}
    assert set(reference["detection"]) >= {
        "region_recall",
        "false_region_frames",
        "false_regions_per_frame",
        "image_AUROC",
    }
    for result in results[1:]:
        assert _comparable(result) == reference
    json.dumps(results[0].to_dict())  # JSON-ready as it is


def test_several_thresholds_from_one_scoring_pass_equal_one_evaluation_each(trained, monkeypatch):
    config_path, experiment = trained
    thresholds = {"low": 0.2, "recipe": 0.5, "high": 0.8}
    expected = {name: evaluate(experiment, config_path, threshold=t) for name, t in thresholds.items()}
    predictor = Predictor.from_path(experiment)
    samples = load_labelled_samples(config_path, None, predictor.config.dataset)
    passes = []
    score = predictor.predict_samples

    def counted(scored):
        passes.append(len(scored))
        return score(scored)

    monkeypatch.setattr(predictor, "predict_samples", counted)
    got = evaluate_at_thresholds(predictor, samples, thresholds, model="m", data="d")
    assert passes == [len(samples)], "one scoring pass for every threshold"
    for name, result in got.items():
        assert result.threshold == thresholds[name]
        pd.testing.assert_frame_equal(result.images, expected[name].images)
    assert got["low"].images["predicted_fraction"].sum() >= got["high"].images["predicted_fraction"].sum()


def test_training_reports_the_region_view_as_evaluate_does(trained):
    """Training's test scores (metrics.json) and evaluate's on the same images, at the model's threshold."""
    config_path, experiment = trained
    metrics = json.loads((experiment / "fold0" / "metrics.json").read_text())
    result = evaluate(experiment, config_path)
    detection = result.detection()
    for name in ("region_recall", "false_region_frames", "false_regions_per_frame", "image_AUROC"):
        assert metrics[f"test_{name}"] == pytest.approx(detection[name]), name
        assert f"validation_{name}" in metrics, name
    assert metrics["test_IoU"] == pytest.approx(result.segmentation()["IoU"])


def test_evaluate_without_masks_names_the_table(trained, tmp_path: Path):
    config_path, experiment = trained
    table = tmp_path / "unlabelled.pq"
    pd.read_parquet(config_path.parent / "test.pq").drop(columns="rle_mask").to_parquet(table)
    with pytest.raises(DataError, match=r"evaluate needs masks: .*unlabelled\.pq"):
        evaluate(experiment, table, data_folder=config_path.parent / "images")


def test_evaluate_a_config_without_test_table_says_what_to_set(trained, tmp_path: Path):
    config_path, experiment = trained
    bare = tmp_path / "bare.yaml"
    bare.write_text(config_path.read_text().replace("test_dataframe:", "test_dataframe: None #"))
    with pytest.raises(ConfigError, match="test_dataframe"):
        evaluate(experiment, bare)


def test_tuning_never_worsens_and_the_predictor_uses_the_stored_threshold(trained, tmp_path: Path):
    config_path, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    validation = pd.read_parquet(experiment / "fold0/validation_predictions.parquet")
    trained_iou = iou_from_counts(validation[["tp", "fp", "fn"]].to_numpy().sum(0))[0]

    result = tune_threshold(experiment, "IoU", grid=[0.05, 0.3, 0.7, 0.95])
    assert result.previous_threshold == 0.5 and 0.5 in result.grid, "the current threshold is always tried"
    assert result.before == pytest.approx(trained_iou), "re-scoring reproduces training's validation IoU"
    assert result.after >= result.before and result.after == result.scores.max()
    stored = json.loads((experiment / "fold0" / THRESHOLD_NAME).read_text())
    assert stored["probability_threshold"] == result.threshold
    assert Predictor.from_path(experiment).threshold == result.threshold
    assert evaluate(experiment, config_path).threshold == result.threshold

    again = tune_threshold(experiment, "F-beta")
    assert again.previous_threshold == result.threshold, "re-tuning starts from the stored threshold"
    assert again.after >= again.before


def test_a_broken_stored_threshold_names_the_file(trained, tmp_path: Path):
    _, original = trained
    fold = shutil.copytree(original / "fold0", tmp_path / "fold0")
    (fold / THRESHOLD_NAME).write_text(json.dumps({"probability_threshold": 1.5}))
    with pytest.raises(ModelError, match=f"{THRESHOLD_NAME}.*tune-threshold"):
        Predictor.from_path(fold)
    with pytest.raises(ConfigError, match="F-beta"):
        tune_threshold(fold, "Accuracy")


FLIP = "prediction.test_time_augmentations=[horizontal_flip]"


def test_a_trained_model_scores_with_other_scoring_keys_and_refuses_the_rest(trained):
    config_path, experiment = trained
    plain = evaluate(experiment, config_path, threshold=0.5).segmentation()
    flipped = evaluate(experiment, config_path, threshold=0.5, scoring_overrides=[FLIP]).segmentation()
    assert flipped["mean_image_MAE"] != plain["mean_image_MAE"], "the flipped pass changes the probabilities"
    predictor = Predictor.from_path(
        experiment, scoring_overrides=[FLIP, "prediction.probability_threshold=0.3"]
    )
    assert predictor.threshold == 0.3 and len(predictor.augmentations) == 1
    assert Predictor.from_path(experiment).augmentations == [], "an override lasts for one scoring only"

    refused = (
        r"'training.epochs=3' cannot change on a trained model.*`smokeseg train CONFIG --set training.ep"
    )
    with pytest.raises(ConfigError, match=refused):
        Predictor.from_path(experiment, scoring_overrides=["training.epochs=3"])
    with pytest.raises(ConfigError, match=r"prediction.probability_threshold = 2"):
        Predictor.from_path(experiment, scoring_overrides=["prediction.probability_threshold=2"])


def test_tuning_with_scoring_keys_stores_them_with_the_threshold(trained, tmp_path: Path):
    """The tuned threshold holds for the model scoring as it was tuned: predict and evaluate follow it."""
    config_path, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    table = _validation_table(config_path, experiment, tmp_path / "validation.pq")
    images = config_path.parent / "images"
    flipped_before = evaluate(experiment, table, threshold=0.5, data_folder=images, scoring_overrides=[FLIP])
    plain_before = evaluate(experiment, table, threshold=0.5, data_folder=images)

    result = tune_threshold(experiment, "mean_image_IoU", scoring_overrides=[FLIP])
    assert result.before == pytest.approx(flipped_before.segmentation()["mean_image_IoU"])
    assert result.before != pytest.approx(plain_before.segmentation()["mean_image_IoU"]), "tells them apart"
    stored = json.loads((experiment / "fold0" / THRESHOLD_NAME).read_text())
    assert stored["scoring_overrides"] == [FLIP]
    predictor = Predictor.from_path(experiment)
    assert predictor.config.prediction.test_time_augmentations == ["horizontal_flip"]
    assert predictor.threshold == result.threshold
    after = evaluate(experiment, table, data_folder=images)
    assert after.segmentation()["mean_image_IoU"] == pytest.approx(result.after), "evaluate scores as tuned"

    again = tune_threshold(experiment, "mean_image_IoU")
    assert again.before == pytest.approx(
        evaluate(
            experiment,
            table,
            threshold=result.threshold,
            data_folder=images,
            scoring_overrides=["prediction.test_time_augmentations=[]"],
        ).segmentation()["mean_image_IoU"]
    ), "a new tuning scores with the checkpoint's config, not the stored overrides"
    assert json.loads((experiment / "fold0" / THRESHOLD_NAME).read_text())["scoring_overrides"] == []
    assert Predictor.from_path(experiment).augmentations == []


def test_a_stored_operating_point_with_bad_scoring_keys_names_the_file(trained, tmp_path: Path):
    _, original = trained
    fold = shutil.copytree(original / "fold0", tmp_path / "fold0")
    stored = fold / THRESHOLD_NAME
    stored.write_text(json.dumps({"probability_threshold": 0.4, "scoring_overrides": FLIP}))
    with pytest.raises(ModelError, match=f"{THRESHOLD_NAME}: scoring_overrides must be a list"):
        Predictor.from_path(fold)
    stored.write_text(
        json.dumps({"probability_threshold": 0.4, "scoring_overrides": ["image.long_side=640"]})
    )
    with pytest.raises(ConfigError, match=f"{THRESHOLD_NAME}: 'image.long_side=640' cannot change"):
        Predictor.from_path(fold)


def test_an_edited_scoring_key_in_the_run_record_warns_where_it_goes(trained, tmp_path: Path, caplog):
    _, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    with caplog.at_level(logging.WARNING, logger="smokeseg"):
        Predictor.from_path(experiment)
    assert not caplog.records, "the records as training wrote them agree with the checkpoint"

    fold = experiment / "fold0"
    record = experiment / "config.yaml"  # the run's; the fold's is checked below
    raw = yaml.safe_load(record.read_text())
    raw["prediction"]["test_time_augmentations"] = ["horizontal_flip"]
    record.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.WARNING, logger="smokeseg"):
        Predictor.from_path(experiment)
    assert "prediction.test_time_augmentations differ" in caplog.records[0].getMessage()
    caplog.clear()

    record = fold / "config.yaml"
    raw = yaml.safe_load(record.read_text())
    raw["prediction"]["test_time_augmentations"] = ["horizontal_flip"]
    raw["prediction"]["probability_threshold"] = 0.2
    record.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.WARNING, logger="smokeseg"):
        predictor = Predictor.from_path(fold)
    assert predictor.augmentations == [] and predictor.threshold == 0.5, "the checkpoint's config scores"
    message = caplog.records[0].getMessage()
    edited = "prediction.probability_threshold, prediction.test_time_augmentations differ from the checkpoint"
    assert edited in message and str(record) in message and "--set KEY=VALUE" in message

    caplog.clear()
    raw["image"]["context_pass"] = "sideways"
    record.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.WARNING, logger="smokeseg"):
        Predictor.from_path(fold)
    message = caplog.records[0].getMessage()
    assert "image.context_pass = 'sideways'" in message and "not with this file" in message


def test_cli_scoring_commands_take_scoring_keys(trained, tmp_path: Path):
    config_path, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    refused = CliRunner().invoke(
        app, ["tune-threshold", str(experiment), "--set", "prediction.probability_threshold=0.3"]
    )
    assert isinstance(refused.exception, ConfigError) and "chooses prediction.probability_threshold" in str(
        refused.exception
    )
    assert not (experiment / "fold0" / THRESHOLD_NAME).exists(), "a refused tuning stores nothing"
    tuned = CliRunner().invoke(app, ["tune-threshold", str(experiment), "--set", FLIP])
    assert tuned.exit_code == 0, tuned.output
    assert json.loads((experiment / "fold0" / THRESHOLD_NAME).read_text())["scoring_overrides"] == [FLIP]
    exported = CliRunner().invoke(app, ["export", str(experiment), "--package", str(tmp_path / "package")])
    assert exported.exit_code == 0, exported.output
    package = load_config(tmp_path / "package" / "config.yaml")
    assert package.prediction.test_time_augmentations == ["horizontal_flip"], "the package scores as tuned"

    scores = tmp_path / "scores.json"
    arguments = ["evaluate", str(experiment), str(config_path), "--output", str(scores)]
    for overrides in ([], ["--set", "prediction.test_time_augmentations=[]"]):
        result = CliRunner().invoke(app, [*arguments, *overrides])
        assert result.exit_code == 0, result.output
    unflipped = json.loads(scores.read_text())["segmentation"]["mean_image_MAE"]
    assert unflipped == pytest.approx(
        evaluate(original, config_path, threshold=0.5).segmentation()["mean_image_MAE"]
    ), "--set replaced the stored flip for this evaluation"

    predictions = tmp_path / "predictions"
    arguments = ["predict", str(experiment), str(config_path.parent / "images"), "-o", str(predictions)]
    refused = CliRunner().invoke(app, [*arguments, "--set", "architecture.backbone=resnet18"])
    assert isinstance(refused.exception, ConfigError) and not predictions.exists()
    result = CliRunner().invoke(app, [*arguments, "--set", "prediction.probability_threshold=0.99"])
    assert result.exit_code == 0, result.output


def _validation_table(config_path: Path, experiment: Path, target: Path) -> Path:
    """The fold's out-of-fold validation images as a table of their own, for `evaluate` to re-measure."""
    ids = pd.read_parquet(experiment / "fold0/validation_predictions.parquet")["image_id"].astype(str)
    train = pd.read_parquet(config_path.parent / "train.pq")
    train[train["image_id"].astype(str).isin(set(ids))].to_parquet(target)
    return target


def test_tuning_for_mean_image_iou_picks_the_grid_maximum_evaluate_measures(trained, tmp_path: Path):
    config_path, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    table = _validation_table(config_path, experiment, tmp_path / "validation.pq")
    images = config_path.parent / "images"
    grid = [0.1, 0.3, 0.7, 0.9, 0.99]

    result = tune_threshold(experiment, "mean_image_IoU", grid=grid)
    assert result.grid.tolist() == [0.1, 0.3, 0.5, 0.7, 0.9, 0.99], "the current threshold is tried too"
    measured = [evaluate(experiment, table, threshold=t, data_folder=images) for t in result.grid]
    mean_curve = np.array([m.segmentation()["mean_image_IoU"] for m in measured])
    dataset_curve = np.array([m.segmentation()["IoU"] for m in measured])
    assert len(measured[0].images) == result.images == 3
    assert not np.allclose(mean_curve, dataset_curve), "the views differ here: the test tells them apart"
    assert result.scores == pytest.approx(mean_curve)
    best = np.flatnonzero(np.isclose(mean_curve, mean_curve.max()))
    assert result.threshold == result.grid[best[np.argmin(np.abs(result.grid[best] - 0.5))]]
    assert result.after == pytest.approx(mean_curve.max()) and result.after >= result.before
    assert result.before == pytest.approx(mean_curve[2]), "before: the current threshold's score"
    stored = json.loads((experiment / "fold0" / THRESHOLD_NAME).read_text())
    assert stored["metric"] == "mean_image_IoU" and stored["probability_threshold"] == result.threshold
    assert "target_met" not in stored, "the operating point's fields belong to that rule only"


def test_the_operating_point_is_the_highest_threshold_that_reaches_the_target():
    thresholds = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    recall = np.array([1.0, 0.95, 0.9, 0.8, 0.6])
    assert choose_operating_point(thresholds, recall, 0.9) == (2, True)
    assert choose_operating_point(thresholds, recall, 0.8) == (3, True)
    assert choose_operating_point(thresholds, recall, 0.5) == (4, True)
    # Recall need not fall steadily (a region may shrink below the smallest region and come back).
    assert choose_operating_point(thresholds, [1.0, 0.8, 0.9, 0.7, 0.9], 0.9) == (4, True)
    # A share k/n equal to the target reaches it, whatever the rounding of the target.
    assert choose_operating_point([0.2, 0.4], np.array([3, 3]) / 10, 0.1 + 0.2) == (1, True)
    assert choose_operating_point([0.2, 0.4], np.array([9, 8]) / 10, 0.9) == (0, True)


def test_an_unreachable_target_takes_the_highest_recall_and_says_so():
    thresholds = np.array([0.1, 0.2, 0.3, 0.4])
    assert choose_operating_point(thresholds, [0.8, 0.8, 0.7, 0.5], 1.0) == (1, False), "tie: highest"
    assert choose_operating_point(thresholds, [0.0] * 4, 0.5) == (3, False)
    with pytest.raises(ValueError, match="one value per threshold"):
        choose_operating_point(thresholds, [0.8, 0.8, 0.7], 0.9)


def test_the_alarm_budget_takes_the_most_recall_whose_windows_keep_to_it():
    thresholds = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    recall = np.array([1.0, 0.9, 0.9, 0.7, 0.5])
    alarms = np.array([0.5, 0.1, 0.05, 0.05, 0.0])
    assert choose_within_alarm_budget(thresholds, recall, alarms, 0.05) == (2, True), "tie: highest"
    assert choose_within_alarm_budget(thresholds, recall, alarms, 0.1) == (2, True)
    assert choose_within_alarm_budget(thresholds, recall, alarms, 0.5) == (0, True)
    assert choose_within_alarm_budget(thresholds, recall, alarms, 0.0) == (4, True)
    # A share k/n equal to the budget keeps to it, whatever the rounding of the budget.
    assert choose_within_alarm_budget([0.2, 0.4], [1.0, 0.5], np.array([3, 0]) / 10, 0.1 + 0.2) == (0, True)
    # Alarms need not fall steadily; where none keeps to the budget, the fewest alarms, highest threshold.
    assert choose_within_alarm_budget(thresholds, recall, [0.5, 0.2, 0.3, 0.2, 0.4], 0.1) == (3, False)
    # Finding nothing keeps any budget, and is no answer: the fewest alarms among thresholds that find smoke.
    found_nothing_at_one = choose_within_alarm_budget(
        [0.5, 0.9, 0.95, 1.0], [0.8, 0.4, 0.2, 0.0], [0.2, 0.08, 0.08, 0.0], 0.05
    )
    assert found_nothing_at_one == (2, False)
    assert choose_within_alarm_budget([0.5, 1.0], [0.0, 0.0], [0.1, 0.0], 0.05) == (1, False), "none finds"
    with pytest.raises(ValueError, match="one value per threshold"):
        choose_within_alarm_budget(thresholds, recall, alarms[:4], 0.1)


def test_alarm_windows_lie_clear_of_the_smoke_and_repeat_for_an_image():
    truth = np.zeros((64, 96), bool)
    truth[10:20, 70:80] = True
    spec = WindowSpec(size=16, margin=4, count=6)
    corners = alarm_windows("frame-1.jpg", truth, spec)
    assert len(corners) == 6 and corners == alarm_windows("frame-1.jpg", truth, spec)
    near = np.zeros_like(truth)
    near[10 - 4 : 20 + 4, 70 - 4 : 80 + 4] = True
    for y, x in corners:
        assert not near[y : y + 16, x : x + 16].any(), (y, x)
    assert alarm_windows("frame-1.jpg", np.ones_like(truth), spec) == [], "no clean window in a smoke frame"


def test_tuning_within_an_alarm_budget_counts_the_frames_windows(trained, tmp_path: Path):
    config_path, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    spec = WindowSpec(size=16, margin=2, count=4)
    budget = 0.25
    result = tune_threshold(experiment, alarm_budget=budget, windows=spec)
    assert result.metric == "region_recall" and result.alarm_budget and result.target == budget
    assert result.window_alarms is not None and result.false_region_frames is not None

    # Re-counted here from the fold's own predictions: each window alarms when a verdict region of the
    # whole frame lies inside it.
    fold = experiment / "fold0"
    ids = set(pd.read_parquet(fold / "validation_predictions.parquet")["image_id"].astype(str))
    table = _validation_table(config_path, experiment, tmp_path / "validation.pq")
    samples = load_samples(table, config_path.parent / "images", DatasetConfig(), require_masks=True)
    assert {s.image_id for s in samples} == ids
    alarms = np.zeros(len(result.grid))
    windows = 0
    for prediction in Predictor.from_path(fold).predict_samples(samples):
        truth = prediction.sample.load_true_mask(*prediction.probabilities.shape)
        corners = alarm_windows(prediction.sample.image_id, truth, spec)
        windows += len(corners)
        for index, threshold in enumerate(result.grid):
            regions = prediction.verdict(threshold).regions
            alarms[index] += sum(bool(regions[y : y + 16, x : x + 16].any()) for y, x in corners)
    assert windows == result.windows > 0
    assert np.allclose(alarms / windows, result.window_alarms)
    assert alarms[0] > alarms[-1], "a low threshold alarms in more smoke-free windows than a high one"

    # One training epoch calls smoke nearly everywhere: no threshold that finds smoke keeps to the budget,
    # so the fewest alarms among those that do is stored, and the budget counts as not kept.
    chosen = int(np.searchsorted(result.grid, result.threshold))
    finds = result.scores > 0
    assert result.target_met is False and finds[chosen]
    assert result.window_alarms[chosen] == result.window_alarms[finds].min() > budget
    stored = json.loads((fold / THRESHOLD_NAME).read_text())
    assert stored["alarm_budget"] == budget and stored["target_met"] is False
    assert "target_region_recall" not in stored
    assert stored["window_alarm"] == result.window_alarms[chosen] and stored["smoke_free_windows"] == windows
    curve = stored["curve"]
    assert curve["threshold"] == result.grid.tolist()
    assert curve["window_alarm"] == pytest.approx(alarms / windows)
    assert curve["region_recall"][chosen] == result.after


def test_windows_alone_are_each_scored_as_an_image_of_their_own(trained, tmp_path: Path):
    """``windows_alone``: each smoke-free window alarms when, cut out and scored as any image is (this
    model resizes every image to its size), it raises predict's alarm, as smoke-free camera crops are
    judged; the stored operating point says which way its windows were counted."""
    config_path, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    spec = WindowSpec(size=16, margin=2, count=4)
    with pytest.raises(ConfigError, match="give alarm_budget with it"):
        tune_threshold(experiment, min_region_recall=0.9, windows_alone=True)
    result = tune_threshold(experiment, alarm_budget=0.25, windows=spec, windows_alone=True)
    assert result.windows_alone and result.window_alarms is not None

    fold = experiment / "fold0"
    table = _validation_table(config_path, experiment, tmp_path / "validation.pq")
    samples = load_samples(table, config_path.parent / "images", DatasetConfig(), require_masks=True)
    predictor = Predictor.from_path(fold)
    alarms = np.zeros(len(result.grid))
    windows = 0
    for prediction in predictor.predict_samples(samples):
        truth = prediction.sample.load_true_mask(*prediction.probabilities.shape)
        crops = [
            prediction.image[y : y + 16, x : x + 16]
            for y, x in alarm_windows(prediction.sample.image_id, truth, spec)
        ]
        windows += len(crops)
        for probabilities, _ in predictor.score_images(crops):
            alarms += [smoke_verdict(probabilities, threshold).smoke for threshold in result.grid]
    assert windows == result.windows > 0
    assert np.allclose(alarms / windows, result.window_alarms)
    assert alarms[0] > alarms[-1], "a low threshold alarms on more smoke-free windows than a high one"
    stored = json.loads((fold / THRESHOLD_NAME).read_text())
    assert stored["window_alarm_rule"] == tuning.WINDOW_ALONE_RULE
    assert stored["curve"]["window_alarm"] == pytest.approx(alarms / windows)

    in_frame = tune_threshold(experiment, alarm_budget=0.25, windows=spec)
    assert not in_frame.windows_alone
    stored = json.loads((fold / THRESHOLD_NAME).read_text())
    assert stored["window_alarm_rule"] == tuning.WINDOW_IN_FRAME_RULE


def test_the_alarm_budget_trades_a_faint_plume_against_a_cloud(trained, tmp_path: Path, monkeypatch):
    """Known probability maps: every frame's smoke at 0.92, except one faint plume at 0.32; one frame's
    whole smoke-free area is a cloud at 0.62. Up to 0.6 that frame's windows alarm; up to 0.3 the faint
    plume is found (off the grid's values, so float32 rounding decides nothing)."""
    _, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    faint, cloudy = 0, 1

    def known_maps(self, samples, on_error=None):
        for index, sample in enumerate(samples):
            truth = sample.load_true_mask(64, 96)
            probabilities = np.where(truth, 0.32 if index == faint else 0.92, 0.0).astype(np.float32)
            if index == cloudy:
                probabilities[~truth] = 0.62
            yield Prediction(sample, np.zeros((64, 96, 3), np.uint8), probabilities)

    monkeypatch.setattr(Predictor, "predict_samples", known_maps)
    spec = WindowSpec(size=16, margin=2, count=4)
    tight = tune_threshold(experiment, alarm_budget=0.0, windows=spec)
    windows = tight.windows or 0
    assert windows == 12 and tight.smoke_images == 3
    cloud_share = 4 / windows  # the cloudy frame's windows
    below_cloud = tight.grid <= 0.6
    assert tight.window_alarms is not None
    assert np.allclose(tight.window_alarms, np.where(below_cloud, cloud_share, 0.0))
    expected_recall = np.where(tight.grid <= 0.3, 1.0, np.where(tight.grid <= 0.9, 2 / 3, 0.0))
    assert np.allclose(tight.scores, expected_recall)
    # No alarm allowed: the highest threshold that misses only the faint plume.
    assert (tight.threshold, tight.after, tight.target_met) == (0.9, 2 / 3, True)

    loose = tune_threshold(experiment, alarm_budget=cloud_share, windows=spec)
    # The cloud's alarms are within budget: every plume is found, at the highest threshold that does so.
    assert (loose.threshold, loose.after, loose.target_met) == (0.3, 1.0, True)
    assert loose.window_alarm_share(loose.threshold) == pytest.approx(cloud_share)
    stored = json.loads((experiment / "fold0" / THRESHOLD_NAME).read_text())
    assert stored["probability_threshold"] == 0.3 and stored["window_alarm"] == pytest.approx(cloud_share)


def test_region_outcomes_are_counted_on_the_coarse_grid_and_the_current_threshold():
    coarse = region_grid(np.unique(np.append(DEFAULT_GRID, 0.37)), 0.37)
    assert len(coarse) == 21 and 0.37 in coarse and 1.0 in coarse
    assert 0.0 not in coarse, "at zero one frame-filling region would find every plume"
    assert np.allclose(np.delete(coarse, np.searchsorted(coarse, 0.37)), np.linspace(0.05, 1, 20))
    assert region_grid(np.array([0.0, 0.05, 0.3, 0.33]), 0.5).tolist() == [0.05, 0.3, 0.5]


def test_tuning_for_region_recall_takes_the_highest_threshold_that_reaches_it(trained, tmp_path: Path):
    config_path, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    target = 0.5
    result = tune_threshold(experiment, min_region_recall=target)
    assert result.metric == "region_recall" and result.target_met is True and result.smoke_images == 3
    assert len(result.grid) == 20, "0.05 steps above zero; the current 0.5 is one of them"
    chosen = int(np.searchsorted(result.grid, result.threshold))
    assert result.after == result.scores[chosen] >= target
    false = result.false_region_frames
    assert false is not None
    assert (result.scores[chosen + 1 :] < target).all(), "no higher threshold reaches the target"
    assert chosen + 1 < len(result.grid), "the next threshold up exists, to re-measure below"

    # Re-measured as evaluate counts it, at the chosen threshold and the next one up.
    table = _validation_table(config_path, experiment, tmp_path / "validation.pq")
    for index in (chosen, chosen + 1):
        detection = evaluate(
            experiment, table, threshold=result.grid[index], data_folder=config_path.parent / "images"
        ).detection()
        assert detection["region_recall"] == pytest.approx(result.scores[index])
        assert detection["false_region_frames"] == pytest.approx(false[index])
    stored = json.loads((experiment / "fold0" / THRESHOLD_NAME).read_text())
    assert stored["metric"] == "region_recall" and stored["probability_threshold"] == result.threshold
    assert stored["target_region_recall"] == target and stored["target_met"] is True
    assert stored["region_recall"] == result.after and stored["false_region_frames"] == false[chosen]
    # 256-pixel windows do not fit 64x96 frames: no alarm share, rather than a share of zero windows.
    assert stored["smoke_free_windows"] == 0 and stored["window_alarm"] is None
    assert stored["curve"]["window_alarm"] is None
    assert stored["curve"]["false_region_frames"] == false.tolist()
    assert Predictor.from_path(experiment).threshold == result.threshold


def test_region_recall_without_smoke_in_validation_names_the_folds(trained, tmp_path: Path, monkeypatch):
    _, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    monkeypatch.setattr(Sample, "load_true_mask", lambda self, height, width: np.zeros((height, width), bool))
    with pytest.raises(DataError, match=r"fold0.*region recall needs validation images with smoke"):
        tune_threshold(experiment, min_region_recall=0.9)
    assert not (experiment / "fold0" / THRESHOLD_NAME).exists(), "nothing is stored"
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        tune_threshold(experiment, min_region_recall=0.0)
    with pytest.raises(ConfigError, match="Give one rule, not a metric and min_region_recall"):
        tune_threshold(experiment, "IoU", min_region_recall=0.9)
    with pytest.raises(ConfigError, match="not min_region_recall and alarm_budget"):
        tune_threshold(experiment, min_region_recall=0.9, alarm_budget=0.05)
    with pytest.raises(ConfigError, match=r"alarm_budget must lie in \[0, 1\); got 1.0"):
        tune_threshold(experiment, alarm_budget=1.0)


def test_an_alarm_budget_without_a_window_that_fits_says_what_to_change(trained, tmp_path: Path):
    _, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    with pytest.raises(DataError, match=r"No smoke-free window fits the 3 validation .*smaller window"):
        tune_threshold(experiment, alarm_budget=0.05)  # 256-pixel windows in 64x96 frames
    assert not (experiment / "fold0" / THRESHOLD_NAME).exists(), "nothing is stored"


def test_cli_tune_threshold_warns_when_the_region_recall_target_is_out_of_reach(
    trained, tmp_path: Path, monkeypatch
):
    _, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    real_outcome = tuning.region_outcome

    def never_on_the_smoke(regions, truth):  # every region misses: no threshold finds any smoke
        false, _ = real_outcome(regions, truth)
        return false, False

    monkeypatch.setattr(tuning, "region_outcome", never_on_the_smoke)
    result = CliRunner().invoke(app, ["tune-threshold", str(experiment), "--min-region-recall", "1.0"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "Operating point: the highest threshold with region recall >= 1.00" in output
    assert "Warning: Region recall target 1.00 not reached on the 3 validation images with smoke" in output
    assert "the best, 0.0000 (0 of them found)" in output
    stored = json.loads((experiment / "fold0" / THRESHOLD_NAME).read_text())
    assert stored["target_met"] is False and stored["region_recall"] == 0.0
    assert f"threshold {stored['probability_threshold']:.2f}, is stored" in output


def test_cli_tune_threshold_takes_one_rule(trained, tmp_path: Path):
    _, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    for options, message in (
        (["--metric", "IoU", "--min-region-recall", "0.9"], "not a metric and min_region_recall"),
        (["--min-region-recall", "0.9", "--alarm-budget", "0.1"], "not min_region_recall and alarm_budget"),
        (["--min-region-recall", "0"], "min_region_recall must lie in (0, 1]"),
        (["--alarm-budget", "1"], "alarm_budget must lie in [0, 1)"),
        (["--window-size", "32"], "a window size is for --alarm-budget only"),
        (["--windows-alone"], "windows alone are for --alarm-budget only"),
    ):
        refused = CliRunner().invoke(app, ["tune-threshold", str(experiment), *options])
        assert refused.exit_code == 2, refused.output
        assert message in " ".join(refused.output.replace("│", " ").split()), refused.output
    assert not (experiment / "fold0" / THRESHOLD_NAME).exists(), "refused before any tuning"


def test_cli_tune_threshold_warns_when_the_alarm_budget_cannot_be_kept(trained, tmp_path: Path):
    _, original = trained
    experiment = shutil.copytree(original, tmp_path / "exp")
    arguments = ["tune-threshold", str(experiment), "--alarm-budget", "0.2", "--window-size", "16"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    stored = json.loads((experiment / "fold0" / THRESHOLD_NAME).read_text())
    output = " ".join(result.output.split())
    windows = stored["smoke_free_windows"]
    assert f"Alarm budget: the most smoke found with at most 0.20 of {windows} smoke-free windows" in output
    assert stored["alarm_budget"] == 0.2 and windows > 0
    # One training epoch calls smoke nearly everywhere: the budget cannot be kept, and the CLI says so.
    assert stored["target_met"] is False and stored["window_alarm"] > 0.2
    assert "Warning: No threshold that finds smoke keeps to the alarm budget 0.20" in output
    assert f"alarm at threshold {stored['probability_threshold']:.2f}" in output

    result = CliRunner().invoke(app, [*arguments, "--windows-alone"])
    assert result.exit_code == 0, result.output
    assert "smoke-free windows alarming, each scored alone" in " ".join(result.output.split())
    stored = json.loads((experiment / "fold0" / THRESHOLD_NAME).read_text())
    assert stored["window_alarm_rule"] == tuning.WINDOW_ALONE_RULE and stored["smoke_free_windows"] == windows


def test_cli_evaluate_prints_the_table_and_writes_json(trained, tmp_path: Path):
    config_path, experiment = trained
    output = tmp_path / "scores.json"
    arguments = ["evaluate", str(experiment), str(config_path), "--output", str(output)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "Evaluation: 4 images" in result.output and "F-beta" in result.output
    scores = json.loads(output.read_text())
    assert scores["images"] == 4 and scores["region_tolerance"] == REGION_TOLERANCE

    result = CliRunner().invoke(app, [*arguments, "--region-tolerance", "0"])
    assert result.exit_code == 0, result.output
    assert json.loads(output.read_text())["region_tolerance"] == 0
    refused = CliRunner().invoke(app, [*arguments, "--region-tolerance", "-1"])
    assert refused.exit_code == 2 and "region-tolerance" in refused.output


def test_cli_evaluate_scores_in_tiles_on_the_device_asked_for(trained, tmp_path: Path, monkeypatch):
    config_path, experiment = trained
    seen = {}

    def from_path(*args, **kwargs):
        seen.update(device=args[1], tile=kwargs["tile"])
        return real_from_path(*args, **kwargs)

    real_from_path = Predictor.from_path
    monkeypatch.setattr(Predictor, "from_path", from_path)
    arguments = ["evaluate", str(experiment), str(config_path), "--output", str(tmp_path / "scores.json")]
    options = ["--tile", "--tile-size", "64", "--tile-overlap", "16", "--device", "cpu"]
    result = CliRunner().invoke(app, [*arguments, *options])
    assert result.exit_code == 0, result.output
    assert seen == {"device": "cpu", "tile": TileSpec(64, 16)}
    assert json.loads((tmp_path / "scores.json").read_text())["images"] == 4
