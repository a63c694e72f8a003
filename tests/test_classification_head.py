"""The image-level smoke score: a classification head trained with the mask, its gate on the verdict,
the frame score that combines both, and its reliability table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from smokeseg.config.load import load_config
from smokeseg.config.schema import ArchitectureConfig, ExperimentConfig
from smokeseg.data.formats import Sample
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import ModelError
from smokeseg.export.onnx import write_model
from smokeseg.inference.evaluate import evaluate
from smokeseg.inference.predictor import Predictor, TileSpec
from smokeseg.inference.scoring import Prediction, dataset_scores, frame_score, prediction_row
from smokeseg.metrics import auroc, reliability
from smokeseg.model.factory import build_model, split_outputs
from smokeseg.training import run
from smokeseg.training.module import SmokeSegmentationModule
from test_training import TINY

HEAD = [*TINY, "architecture.pretrained=false", "architecture.classification_head=true", "training.epochs=1"]


@pytest.fixture(scope="module")
def trained_with_head(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("head")
    dataset = generate_demo_dataset(folder / "data", n_train=12, n_test=4, size=(64, 96), seed=3)
    run.train(load_config(dataset, HEAD), folder / "exp", progress=False)
    return folder / "exp"


def test_the_head_gives_one_logit_per_image_and_no_head_gives_none():
    images = torch.randn(2, 3, 64, 64)
    with_head = build_model(ArchitectureConfig(backbone="resnet18", classification_head=True)).eval()
    masks, labels = split_outputs(with_head(images))
    assert masks.shape == (2, 1, 64, 64) and labels is not None and labels.shape == (2, 1)
    plain = build_model(ArchitectureConfig(backbone="resnet18")).eval()
    masks, labels = split_outputs(plain(images))
    assert masks.shape == (2, 1, 64, 64) and labels is None


def test_the_training_loss_adds_the_heads_bce_on_holds_smoke():
    config = ExperimentConfig.model_validate(
        {
            "architecture": {"backbone": "resnet18", "classification_head": True},
            "training": {"loss_function": "BCE"},
        }
    )
    module = SmokeSegmentationModule(config.model_dump(mode="json"))
    logits = torch.zeros(2, 1, 8, 8)
    masks = torch.zeros(2, 1, 8, 8)
    masks[1, 0, 2:4, 2:4] = 1.0  # the second crop holds smoke, the first does not
    label_logits = torch.tensor([[2.0], [-1.0]])
    expected_head = F.binary_cross_entropy_with_logits(label_logits, torch.tensor([[0.0], [1.0]]))
    mask_only = module._loss(logits, None, masks)
    combined = module._loss(logits, label_logits, masks)
    torch.testing.assert_close(combined, mask_only + expected_head)
    module.config.training.classification_weight = 0.25
    torch.testing.assert_close(module._loss(logits, label_logits, masks), mask_only + 0.25 * expected_head)


def _prediction(image_probability: float | None, image_threshold: float | None) -> Prediction:
    probabilities = np.zeros((40, 40), np.float32)
    probabilities[10:20, 10:20] = 0.9
    sample = Sample(image_id="frame.png", store=None, group="frame")  # type: ignore[arg-type]
    return Prediction(
        sample, np.zeros((40, 40, 3), np.uint8), probabilities, image_probability, image_threshold
    )


def test_the_head_vetoes_an_alarm_only_below_its_threshold():
    assert _prediction(None, None).verdict(0.5).smoke, "no head: the mask alone decides"
    assert _prediction(0.2, None).verdict(0.5).smoke, "a head without a threshold has no say"
    assert _prediction(0.6, 0.5).verdict(0.5).smoke
    vetoed = _prediction(0.2, 0.5).verdict(0.5)
    assert not vetoed.smoke and vetoed.boxes == [] and not vetoed.regions.any()
    assert vetoed.confidence == pytest.approx(0.8)


def test_the_frame_score_needs_both_the_mask_and_the_head():
    assert frame_score(0.9, None) == 0.9
    assert frame_score(0.9, 0.1) == pytest.approx(0.3)
    assert _prediction(0.4, None).frame_score == pytest.approx(math.sqrt(0.9 * 0.4))


def test_reliability_table_bins_scores_and_measures_the_calibration_gap():
    labels = [0, 0, 1, 1, 1, 0]
    scores = [0.05, 0.05, 0.95, 0.95, 0.55, 0.55]
    table = reliability(labels, scores, bins=10)
    assert [(row["low"], row["frames"], row["smoke_share"]) for row in table["bins"]] == [
        (0.0, 2, 0.0),
        (0.5, 2, 0.5),
        (0.9, 2, 1.0),
    ]
    # |0.05-0| * 2 + |0.55-0.5| * 2 + |0.95-1| * 2 over 6 frames
    assert table["ECE"] == pytest.approx(0.05)
    assert reliability([1, 0], [1.0, 0.0])["ECE"] == pytest.approx(0.0)


def test_training_with_the_head_records_each_images_smoke_probability(trained_with_head: Path):
    table = pd.read_parquet(trained_with_head / "fold0/validation_predictions.parquet")
    assert table["image_probability"].between(0, 1).all()
    predictor = Predictor.from_path(trained_with_head, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8)
    [(probabilities, image_probability)] = predictor.score_images([image])
    assert probabilities.shape == (64, 96) and image_probability is not None
    # The rows' frame score (used for the image AUROC) is the combined one, not the mask's maximum.
    combined = frame_score(table["probability_max"], table["image_probability"])
    assert not np.allclose(combined, table["probability_max"])
    holds_smoke = (table["tp"] + table["fn"]) > 0
    assert dataset_scores(table)["image_AUROC"] == auroc(holds_smoke, combined)


def test_tiled_scoring_takes_the_most_confident_tile(trained_with_head: Path):
    predictor = Predictor.from_path(trained_with_head, device="cpu", tile=TileSpec(size=64, overlap=0))
    image = np.random.default_rng(1).integers(0, 255, (64, 128, 3), np.uint8)
    [(_, image_probability)] = predictor.score_images([image])
    left, right = predictor.scores_at_model_size(
        torch.from_numpy(np.stack([predictor.preprocess(image[:, :64]), predictor.preprocess(image[:, 64:])]))
    )[1].tolist()
    assert image_probability == pytest.approx(max(left, right), abs=1e-5)


def test_evaluate_reports_the_heads_calibration(trained_with_head: Path):
    data = trained_with_head.parent / "data"
    result = evaluate(trained_with_head, data / "test.pq", data_folder=data / "images", device="cpu")
    report = result.to_dict()
    assert sum(row["frames"] for row in report["calibration"]["bins"]) == len(result.images)
    assert result.images["frame_score"].tolist() == pytest.approx(
        frame_score(result.images["probability_max"], result.images["image_probability"]).tolist()
    )


def test_a_prediction_row_carries_the_image_probability_only_with_a_head():
    assert "image_probability" not in prediction_row(_prediction(None, None), 0.5)
    assert prediction_row(_prediction(0.3, 0.5), 0.5)["image_probability"] == 0.3


def test_export_refuses_a_verdict_the_graph_cannot_give(trained_with_head: Path, tmp_path: Path):
    predictor = Predictor.from_path(trained_with_head, device="cpu")
    predictor.config.prediction.classification_threshold = 0.5
    with pytest.raises(ModelError, match="classification_threshold"):
        write_model(predictor, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
