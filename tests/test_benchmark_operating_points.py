"""benchmarks/accuracy_items.py's operating points: three tuned copies of one model, the test frames and
the smoke-free crops scored once and judged at each copy's threshold, as each copy alone would judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from smokeseg.config.load import load_config
from smokeseg.config.schema import DatasetConfig
from smokeseg.data.formats import load_samples
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.inference.evaluate import evaluate
from smokeseg.training import run
from test_training import TINY

ROOT = Path(__file__).resolve().parents[1]
ROW = "a tiny row"
# The alarm budget's default windows (256 px) do not fit these 64x64 frames: two points of the three.
POINTS = {
    "best mean per-image IoU": ("--metric", "mean_image_IoU"),
    "region recall >= 0.9": ("--min-region-recall", "0.9"),
}


@pytest.fixture
def accuracy_items(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import accuracy_items

    monkeypatch.setattr(accuracy_items, "OPERATING_POINTS", POINTS)
    return accuracy_items


def test_each_point_is_judged_as_its_tuned_copy_alone_would_be(tmp_path: Path, accuracy_items):
    from false_alarms import score_model

    config = generate_demo_dataset(tmp_path / "data", n_train=10, n_test=3, size=(64, 64), seed=7)
    data = config.parent
    workdir = tmp_path / "work"
    experiment = workdir / accuracy_items._folder_name(ROW)
    run.train(
        load_config(config, [*TINY, "training.epochs=1", "dataset.test_dataframe=None"]),
        experiment,
        progress=False,
    )
    crops = load_samples(data / "train.pq", data / "images", DatasetConfig(), require_masks=True)
    test_frames = load_samples(data / "test.pq", data / "images", DatasetConfig(), require_masks=True)
    sizes = {crop.image_id: crop.load_image().shape[:2] for crop in crops}
    judges = accuracy_items.Judges(crops, sizes, test_frames, None)

    points = accuracy_items.operating_points({"row": ROW}, workdir, judges)

    assert set(points) == set(POINTS)
    assert len({point["threshold"] for point in points.values()}) == 2, "a mix-up of points would show"
    for name, point in points.items():
        tuned = experiment / f"fold0-{accuracy_items._folder_name(name)}"
        assert point["threshold"] == point["validation"]["probability_threshold"]
        alone = evaluate(tuned, data / "test.pq", data_folder=data / "images")
        assert point["test"]["IoU"] == pytest.approx(alone.segmentation()["IoU"])
        assert point["test"]["mean_image_IoU"] == pytest.approx(alone.segmentation()["mean_image_IoU"])
        assert point["test"]["region_recall"] == alone.detection()["region_recall"]
        assert point["test_by_size"] == alone.by_size()
        assert (
            point["smoke_free_crops"] == score_model(str(tuned), crops, sizes, test_frames)["operating_point"]
        )


def test_every_row_has_its_own_folder(accuracy_items):
    """Rows share a workdir and a row whose folder exists is not trained again: two names alike in their
    first 60 characters would judge one row's model as the other's."""
    folders = [accuracy_items._folder_name(row.name) for row in accuracy_items.ROWS]
    assert len(set(folders)) == len(folders)
