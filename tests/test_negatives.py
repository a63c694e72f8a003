"""Hard negatives: smoke-free windows, the mine-negatives command, and training that draws them."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from smokeseg.cli import app
from smokeseg.config.load import load_config
from smokeseg.config.schema import DatasetConfig
from smokeseg.data.dataset import fit_to_size
from smokeseg.data.formats import load_samples, read_table
from smokeseg.data.images import read_image
from smokeseg.data.negatives import (
    MINING_RULES,
    NegativeMix,
    WindowSpec,
    clean_corners,
    frame_on_disk,
    hard_windows,
    load_negatives,
    negative_sources,
    smoke_free_windows,
)
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import ConfigError, DataError, OutputError, SmokesegError
from smokeseg.inference import mining
from smokeseg.inference.predictor import Predictor
from smokeseg.training import run
from smokeseg.training.module import SmokeSegmentationModule
from test_training import TINY

# --- choosing windows ---------------------------------------------------------------------------------


def _near(window_y: int, window_x: int, mask: np.ndarray, size: int, margin: int) -> bool:
    """Whether any smoke lies within ``margin`` of the window (checked pixel by pixel, not by the finder's
    dilation)."""
    ys, xs = np.nonzero(mask)
    dy = np.maximum(0, np.maximum(window_y - ys, ys - (window_y + size - 1)))
    dx = np.maximum(0, np.maximum(window_x - xs, xs - (window_x + size - 1)))
    return bool((np.maximum(dy, dx) <= margin).any())


def test_clean_windows_keep_the_margin_from_smoke():
    mask = np.zeros((64, 128), bool)
    mask[:, 40] = True  # a vertical line of smoke at column 40
    corners = clean_corners(mask, 32, 8)
    # x=0 ends at column 31 (9 px from the smoke); x=16 would end at 47; x=48 starts 8 px from it.
    assert sorted({int(x) for x in corners[:, 1]}) == [0, 64, 80, 96]
    rng = np.random.default_rng(0)
    blobs = rng.random((96, 160)) > 0.995
    for y, x in smoke_free_windows(blobs, 32, 5, 100, rng):
        assert not _near(y, x, blobs, 32, 5)
    assert smoke_free_windows(np.ones((64, 64), bool), 32, 0, 5, rng) == []


def test_hard_windows_are_where_the_model_is_most_wrong():
    mask = np.zeros((256, 384), bool)
    mask[100:140, 180:220] = True
    probabilities = np.full(mask.shape, 0.1, np.float32)
    probabilities[110:120, 190:200] = 1.0  # on true smoke: not an error
    probabilities[200:210, 20:30] = 0.9  # a false alarm
    probabilities[20:30, 340:350] = 0.7  # a weaker one
    probabilities[20:30, 20:30] = 0.4  # below the threshold: the model is right there
    spec = WindowSpec(size=64, margin=16, count=10, threshold=0.5)
    windows = hard_windows(probabilities, mask, spec)
    assert [w.probability_max for w in windows][:1] == [pytest.approx(0.9)]
    assert {round(w.probability_max, 2) for w in windows} == {0.9, 0.7}
    assert [w.probability_max for w in windows] == sorted((w.probability_max for w in windows), reverse=True)
    for w in windows:
        assert not _near(w.y, w.x, mask, 64, 16)
        assert probabilities[w.y : w.y + 64, w.x : w.x + 64].max() > 0.5
    for i, a in enumerate(windows):
        for b in windows[i + 1 :]:
            overlap = max(0, 64 - abs(a.y - b.y)) * max(0, 64 - abs(a.x - b.x))
            assert overlap <= 0.25 * 64**2
    best = hard_windows(probabilities, mask, WindowSpec(size=64, margin=16, count=1, threshold=0.5))[0]
    assert best.y <= 200 and best.y + 64 >= 210 and best.x <= 20 and best.x + 64 >= 30, "holds all of it"
    quiet = np.full(mask.shape, 0.2, np.float32)
    assert hard_windows(quiet, mask, spec) == [], "nothing above the threshold: nothing to mine"


def test_random_rule_needs_no_scores_and_is_repeatable():
    rule = MINING_RULES["random"]
    assert not rule.scored and MINING_RULES["hard"].scored
    mask = np.zeros((128, 128), bool)
    mask[:40, :40] = True
    spec = WindowSpec(size=32, margin=8, count=4)
    first = rule.choose(mask, None, spec, np.random.default_rng([3, 0]))
    assert first == rule.choose(mask, None, spec, np.random.default_rng([3, 0]))
    assert len(first) == 4 and all(w.probability_max is None for w in first)
    assert not any(_near(w.y, w.x, mask, 32, 8) for w in first)


def test_negative_mix_draws_the_share_afresh_each_epoch():
    mix = NegativeMix(train=6, negatives=10, draws=3, seed=1)
    epochs = []
    for epoch in range(3):
        mix.set_epoch(epoch)
        order = list(mix)
        assert len(order) == len(mix) == 9
        assert sorted(i for i in order if i < 6) == list(range(6)), "every training sample once"
        drawn = sorted(i for i in order if i >= 6)
        assert len(drawn) == 3 and len(set(drawn)) == 3 and max(drawn) < 16
        epochs.append(drawn)
    assert len({tuple(d) for d in epochs}) > 1, "a different choice per epoch"
    mix.set_epoch(1)
    assert sorted(i for i in mix if i >= 6) == epochs[1], "repeatable"
    few = NegativeMix(train=4, negatives=2, draws=5, seed=0)
    drawn = [i for i in few if i >= 4]
    assert sorted(set(drawn)) == [4, 5] and len(drawn) == 5, "fewer negatives than draws: each repeats"


# --- the command on a tiny trained model ---------------------------------------------------------------

NATIVE = ["image.resolution=native", "image.long_side=192", "image.image_height=64", "image.image_width=64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(demo config, experiment folder): a tiny native model that scores 64x96 frames at 128x192."""
    root = tmp_path_factory.mktemp("negatives")
    config_path = generate_demo_dataset(root / "data", n_train=8, n_test=2, size=(64, 96), seed=3)
    run.train(load_config(config_path, [*TINY, *NATIVE, "training.epochs=1"]), root / "exp", progress=False)
    return config_path, root / "exp"


def _mine(trained, out: Path, *options: str):
    config_path, experiment = trained
    arguments = ["mine-negatives", str(experiment), str(config_path.parent / "train.pq"), "--out", str(out)]
    return CliRunner().invoke(app, [*arguments, "--size", "64", "--margin", "4", "--device", "cpu", *options])


def test_mined_crops_are_a_dataset_at_the_model_scale(trained, tmp_path: Path):
    out = tmp_path / "hard"
    result = _mine(trained, out, "--count-per-frame", "2", "--threshold", "0")
    assert result.exit_code == 0, result.output
    table = read_table(out / "negatives.csv")
    assert {"image_id", "class_id", "rle_mask", "source_image", "x", "y", "probability_max"} <= set(table)
    summary = json.loads((out / "negatives.json").read_text())
    assert summary["rule"] == "hard" and summary["long_side"] == 192 and summary["size"] == 64
    assert summary["crops"] == len(table) > 0 and summary["frames"] == 8
    assert table.groupby("source_image").size().max() <= 2
    assert f"{len(table)} hard negatives" in result.output
    samples = load_samples(out / "negatives.csv", None, DatasetConfig(), require_masks=True)
    assert len(samples) == len(table)
    for sample in samples:
        image = sample.load_image()
        assert image.shape == (64, 64, 3) and not sample.load_mask(64, 64).any()
    # Each crop is the frame at the model's scale (64x96 enlarged to 128x192), cut where the row says.
    row = table.iloc[0]
    frame = read_image(Path(row["source_image"]).read_bytes(), row["source_image"])
    view = fit_to_size(frame, (192, 192), enlarge=True)
    y, x = int(row["y"]), int(row["x"])
    crop = np.asarray(Image.open(out / "images" / row["image_id"]))
    assert view.shape[:2] == (128, 192) and (crop == view[y : y + 64, x : x + 64]).all()
    assert not list(tmp_path.glob(".*tmp")), "no temporary folder is left behind"


def test_mining_with_nothing_wrong_writes_an_empty_table(trained, tmp_path: Path):
    out = tmp_path / "none"
    result = _mine(trained, out, "--threshold", "1")
    assert result.exit_code == 0, result.output
    assert "No window qualified (smoke-free, above the threshold 1.0)" in result.output
    assert len(pd.read_csv(out / "negatives.csv")) == 0 and not list((out / "images").iterdir())
    assert json.loads((out / "negatives.json").read_text())["crops"] == 0


def test_mining_threshold_is_the_models_unless_given(trained, tmp_path: Path, monkeypatch):
    """A model's own threshold mines where it alarms; a lower one (a tuned operating point's, or 0 for
    each frame's most smoke-like windows) mines more, and the summary says which was used."""
    monkeypatch.setattr(Predictor, "threshold", property(lambda self: 0.999))
    own = _mine(trained, tmp_path / "own", "--count-per-frame", "2")
    lowered = _mine(trained, tmp_path / "lowered", "--count-per-frame", "2", "--threshold", "0")
    assert own.exit_code == lowered.exit_code == 0, own.output + lowered.output
    own_summary = json.loads((tmp_path / "own" / "negatives.json").read_text())
    lowered_summary = json.loads((tmp_path / "lowered" / "negatives.json").read_text())
    assert own_summary["threshold"] == 0.999 and lowered_summary["threshold"] == 0.0
    assert lowered_summary["crops"] > own_summary["crops"]
    mined = read_table(tmp_path / "own" / "negatives.csv")
    assert (mined["probability_max"] > 0.999).all()


def test_random_crops_take_no_threshold(trained, tmp_path: Path):
    out = tmp_path / "random"
    result = _mine(trained, out, "--random", "--threshold", "0.3")
    assert isinstance(result.exception, SmokesegError) and "threshold" in str(result.exception)
    assert not out.exists()


def test_a_mining_threshold_outside_0_1_is_refused_before_the_model_loads(tmp_path: Path):
    out = tmp_path / "out"
    with pytest.raises(SmokesegError, match=r"between 0 and 1; got 1\.5"):
        mining.mine_negatives(
            tmp_path / "no-model", [tmp_path / "no-table.pq"], out, spec=WindowSpec(threshold=1.5)
        )
    assert not out.exists()


def test_random_mining_scores_nothing(trained, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(Predictor, "predict_images", lambda *args: pytest.fail("random mining scored"))
    out = tmp_path / "random"
    result = _mine(trained, out, "--random", "--count-per-frame", "3")
    assert result.exit_code == 0, result.output
    table = read_table(out / "negatives.csv")
    assert len(table) == 24 and table["probability_max"].isna().all() and table["rle_mask"].isna().all()
    assert json.loads((out / "negatives.json").read_text())["rule"] == "random"


def test_each_source_may_have_its_own_data_folder(trained, tmp_path: Path):
    """Tables whose images lie elsewhere, each with its --data-folder: one dataset, names kept apart."""
    config_path, experiment = trained
    tables = tmp_path / "tables"
    tables.mkdir()
    for name in ("train.pq", "test.pq"):
        shutil.copyfile(config_path.parent / name, tables / name)
    images = str(config_path.parent / "images")

    def mine(out: str, *folders: str):
        arguments = ["mine-negatives", str(experiment), str(tables / "train.pq"), str(tables / "test.pq")]
        options = ["--size", "64", "--margin", "4", "--random", "--device", "cpu", "-o", str(tmp_path / out)]
        for folder in folders:
            options += ["--data-folder", folder]
        return CliRunner().invoke(app, [*arguments, *options])

    result = mine("both", images, images)
    assert result.exit_code == 0, result.output
    table = read_table(tmp_path / "both" / "negatives.csv")
    train_ids = set(pd.read_parquet(tables / "train.pq")["image_id"])
    sources_used = {Path(source).name for source in table["source_image"]}
    assert len(table) == 10 and sources_used - train_ids and sources_used & train_ids, sources_used
    assert table["image_id"].is_unique
    summary = json.loads((tmp_path / "both" / "negatives.json").read_text())
    assert summary["data_folders"] == [str(Path(images).resolve())] * 2
    # One folder serves every source; a count that matches neither is refused before the model loads.
    one = mine("one", images)
    assert one.exit_code == 0 and len(read_table(tmp_path / "one" / "negatives.csv")) == 10, one.output
    three = mine("three", images, images, images)
    assert three.exit_code != 0 and not (tmp_path / "three").exists()
    assert "3 data folders for 2 sources" in str(three.exception), three.output
    without = mine("none")
    assert without.exit_code != 0 and not (tmp_path / "none").exists()


def test_a_failure_while_mining_leaves_no_folder(trained, tmp_path: Path, monkeypatch):
    calls = []

    def failing_png(array):
        calls.append(1)
        if len(calls) > 2:
            raise OSError("disk gone")
        return b"png"

    monkeypatch.setattr(mining, "encode_png", failing_png)
    with pytest.raises(OSError, match="disk gone"):
        mining.mine_negatives(
            trained[1], [trained[0].parent / "train.pq"], tmp_path / "out", rule="random", spec=WindowSpec(64)
        )
    assert list(tmp_path.iterdir()) == [], "neither the folder nor its temporary copy"


def test_bad_sources_are_named(trained, tmp_path: Path, caplog):
    experiment = trained[1]
    with pytest.raises(DataError, match=r"nowhere\.pq does not exist"):
        mining.mine_negatives(experiment, [tmp_path / "nowhere.pq"], tmp_path / "out")
    frames = tmp_path / "frames"
    (frames / "images").mkdir(parents=True)
    (frames / "masks").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(frames / "images" / name)
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(frames / "masks" / "a.png")
    with pytest.raises(DataError, match=r"mine-negatives needs masks: .*b\.png"):
        mining.mine_negatives(experiment, [frames], tmp_path / "out")
    Image.fromarray(np.zeros((64, 96), np.uint8)).save(frames / "masks" / "b.png")
    (frames / "images" / "b.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        done = mining.mine_negatives(
            experiment, [frames], tmp_path / "out", rule="random", spec=WindowSpec(64)
        )
    assert done.summary["frames"] == 1 and done.summary["frames_skipped"][0].endswith("b.png")
    assert "b.png" in caplog.text
    with pytest.raises(OutputError, match="already exists"):
        mining.mine_negatives(experiment, [frames], tmp_path / "out", rule="random")


# --- training on negatives -----------------------------------------------------------------------------


def _negatives(folder: Path, count: int) -> Path:
    """``count`` uniform crops (value 7, unlike any demo frame) in a table with empty masks."""
    (folder / "images").mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(folder / "images" / f"n{i}.png")
    table = pd.DataFrame(
        {"image_id": [f"n{i}.png" for i in range(count)], "class_id": "smoke", "rle_mask": ""}
    )
    table.to_csv(folder / "negatives.csv", index=False)
    return folder / "negatives.csv"


def test_training_draws_the_share_of_negatives_with_empty_masks(trained, tmp_path: Path, monkeypatch):
    config_path, _ = trained
    table = _negatives(tmp_path / "neg", 10)
    config = load_config(
        config_path,
        [
            *TINY,
            *NATIVE,
            "training.epochs=1",
            "training.drop_last_batch=false",
            "augmentation.augmentations_strategy=None",
            "dataset.test_dataframe=None",
            "dataset.negative_share=0.25",
            f"dataset.negative_dataframe={table}",
        ],
    )
    seen = []
    step = SmokeSegmentationModule.training_step

    def recording_step(self, batch, batch_index):
        for image, mask in zip(batch["image"], batch["mask"], strict=True):
            seen.append((bool((image * 255 - 7).abs().max() < 0.5), float(mask.sum())))
        return step(self, batch, batch_index)

    monkeypatch.setattr(SmokeSegmentationModule, "training_step", recording_step)
    results = run.train(config, tmp_path / "exp", progress=False)
    n_train = results[0].metrics["train_observations"]
    draws = round(0.25 / 0.75 * n_train)
    assert draws > 0 and len(seen) == n_train + draws
    negatives = [mask for is_negative, mask in seen if is_negative]
    assert len(negatives) == draws and all(mask == 0 for mask in negatives)
    log = (tmp_path / "exp/fold0/logs.log").read_text()
    assert f"Negatives: 10 smoke-free crops, share 0.25: {draws} drawn per epoch" in log


def test_a_fold_trains_on_no_crop_of_its_own_validation_frames(trained, tmp_path: Path):
    """Crops mined from every training frame: each fold leaves out those of the frames it validates on."""
    config_path = trained[0]
    result = _mine(trained, tmp_path / "all", "--random")
    assert result.exit_code == 0, result.output
    mined = read_table(tmp_path / "all" / "negatives.csv")
    assert len(mined) == 8 and all(Path(source).is_absolute() for source in mined["source_image"])
    overrides = [
        *TINY,
        "dataset.test_dataframe=None",
        "dataset.negative_share=0.2",
        f"dataset.negative_dataframe={tmp_path / 'all' / 'negatives.csv'}",
    ]
    config = load_config(config_path, overrides)
    data = run.ExperimentData.load(config)
    source_of = dict(zip(mined["image_id"], mined["source_image"], strict=True))
    for fold in (0, 1):
        fold_data = data.fold(config, fold)
        validated = {str(Path(sample.image_location).resolve()) for sample in fold_data.validation}
        trained_on = {source_of[crop.image_id] for crop in fold_data.negatives}
        assert validated and not validated & trained_on, fold
        assert len(fold_data.negatives) == 8 - len(validated)
    # Trained on the validation frames too, a fold may draw their crops as well.
    everything = load_config(config_path, [*overrides, "training.train_validation_data=true"])
    assert len(run.ExperimentData.load(everything).fold(everything, 0).negatives) == 8


def test_crops_of_frames_that_moved_since_mining_are_named(trained, tmp_path: Path, caplog):
    """Fold-aware negatives match frames by path: a table mined before the frames moved is warned of."""
    result = _mine(trained, tmp_path / "all", "--random")
    assert result.exit_code == 0, result.output
    table = tmp_path / "all" / "negatives.csv"
    overrides = [*TINY, "dataset.negative_share=0.2", f"dataset.negative_dataframe={table}"]
    config = load_config(trained[0], overrides)
    with caplog.at_level(logging.WARNING, logger="smokeseg.data.negatives"):
        assert len(negative_sources(config.dataset)) == 8
    assert not caplog.records, "frames where the table says: nothing to warn of"
    mined = read_table(table)
    moved = [str(tmp_path / "moved" / Path(source).name) for source in mined["source_image"][:4]]
    mined.loc[:3, "source_image"] = moved
    mined.to_csv(table, index=False)
    with caplog.at_level(logging.WARNING, logger="smokeseg.data.negatives"):
        negative_sources(config.dataset)
    assert "4 of 8 crops name a source frame that is not there" in caplog.text
    assert str(tmp_path / "moved") in caplog.text and "mine the negatives again" in caplog.text


def test_a_zip_member_is_on_disk_where_its_archive_is(tmp_path: Path):
    archive = tmp_path / "frames.zip"
    archive.write_bytes(b"PK")
    assert frame_on_disk(str(archive / "images" / "a.jpg"))
    assert not frame_on_disk(str(tmp_path / "gone.zip" / "a.jpg")) and not frame_on_disk(str(tmp_path))


def test_negative_settings_are_checked_and_paths_resolved(trained, tmp_path: Path):
    config_path, _ = trained
    missing = [*TINY, "dataset.negative_share=0.2", f"dataset.negative_dataframe={tmp_path / 'gone.csv'}"]
    with pytest.raises(ConfigError, match=r"negative_dataframe .*gone\.csv does not exist"):
        run.train(load_config(config_path, missing), tmp_path / "exp", progress=False)
    assert not (tmp_path / "exp").exists(), "refused before any experiment folder"
    with pytest.raises(ConfigError, match="negative_dataframe, which is not set"):
        run.validate_before_training(load_config(config_path, [*TINY, "dataset.negative_share=0.2"]))
    train_table = config_path.parent / "train.pq"
    smoky = load_config(
        config_path, ["dataset.negative_share=0.2", f"dataset.negative_dataframe={train_table}"]
    )
    with pytest.raises(ConfigError, match="carry a mask"):
        load_negatives(smoky.dataset)
    (tmp_path / "c.yaml").write_text(
        "dataset:\n  negative_dataframe: neg/negatives.csv\n  negative_share: 0.5\n"
    )
    assert load_config(tmp_path / "c.yaml").dataset.negative_dataframe == tmp_path / "neg/negatives.csv"
    with pytest.raises(ConfigError, match="negative_share"):
        load_config(None, ["dataset.negative_share=1"])
