"""Export: ONNX/TorchScript graphs score like PyTorch; the scoring package scores like `smokeseg predict`,
also in a fresh virtual environment holding only its requirements (linked from this one: no network)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import albumentations as A
import cv2
import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image
from typer.testing import CliRunner

from conftest import png_claiming
from smokeseg.cli import app
from smokeseg.config.load import load_config
from smokeseg.data.dataset import fit_to_size
from smokeseg.data.images import read_image
from smokeseg.data.normalization import NORMALIZATIONS
from smokeseg.data.rle import rle_decode, rle_encode
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import ModelError, SmokesegError
from smokeseg.export import EXPORT_FORMATS, build_package, export_model
from smokeseg.export import onnx as onnx_export
from smokeseg.export import package as package_module
from smokeseg.export.package import SETTINGS_NAME, scoring_settings
from smokeseg.inference.inputs import collect_inputs
from smokeseg.inference.predict import predict
from smokeseg.inference.predictor import CONTEXT_PASSES, TEST_TIME_AUGMENTATIONS, Predictor
from smokeseg.inference.runtimes import load_checkpoint
from smokeseg.inference.scoring import smoke_verdict
from smokeseg.training import run

MODEL_SIZE = (64, 96)
TINY = [
    "architecture.backbone=resnet18",
    f"image.image_height={MODEL_SIZE[0]}",
    f"image.image_width={MODEL_SIZE[1]}",
    "training.batch_size=4",
    "training.epochs=1",
    "environment.number_of_workers=0",
    "environment.seed=7",
    "training.build_scoring_pipelines=false",
    "dataset.folds=[0,1]",
    "dataset.test_dataframe=None",
    # A rotation feeds the graph 96x64 images; each augmentation has its own test below.
    "prediction.test_time_augmentations=[rotate90]",
]
SMOKE_HT_TEST_IMAGES = "data/anon/Smoke_segmentation/content/drive/MyDrive/BushFire/Image_segment/gt_testing"
# Exported and PyTorch probabilities differ by float rounding; a pixel this close to the threshold
# may land on either side of it.
NEAR_THRESHOLD = 1e-4


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A two-fold experiment trained for one epoch on demo images that are not at the model size."""
    root = tmp_path_factory.mktemp("export")
    config_path = generate_demo_dataset(root / "data", n_train=12, n_test=4, size=(90, 140), seed=3)
    run.train(load_config(config_path, TINY), root / "experiment", progress=False)
    return root


@pytest.fixture(scope="module")
def experiment(demo: Path) -> Path:
    return demo / "experiment"


@pytest.fixture(scope="module")
def predictor(experiment: Path) -> Predictor:
    return Predictor.from_path(experiment)


@pytest.fixture(scope="module")
def package(experiment: Path, tmp_path_factory) -> Path:
    return build_package(experiment, tmp_path_factory.mktemp("package") / "smoke_scoring")


@pytest.fixture(scope="module")
def score(package: Path) -> ModuleType:
    """The package's score.py, imported as a module."""
    spec = importlib.util.spec_from_file_location("packaged_score", package / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def images(demo: Path) -> Path:
    """Real-looking images at several sizes (one exactly twice the model size, one nested), a 16-bit
    grayscale PNG, a JPEG rotated by its EXIF tag, and a file that is not an image."""
    folder = demo / "to_score"
    folder.mkdir()
    demo_images = sorted((demo / "data/images").glob("test_*.jpg"))
    for path in demo_images:
        shutil.copy(path, folder / path.name)
    photo = np.asarray(Image.open(demo_images[0]).convert("RGB"))
    (folder / "nested").mkdir()
    Image.fromarray(cv2.resize(photo, (70, 50))).save(folder / "nested/small.png")
    Image.fromarray(cv2.resize(photo, (2 * MODEL_SIZE[1], 2 * MODEL_SIZE[0]))).save(folder / "double.png")
    wide = (photo[:, :, 0].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(wide).save(folder / "gray16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    Image.fromarray(photo).save(folder / "rotated.jpg", exif=exif, quality=95)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def session(package: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(package / "model.onnx"), providers=["CPUExecutionProvider"])


def _ensemble_probabilities(predictor: Predictor, batch: np.ndarray) -> np.ndarray:
    """Reference: the mean of the folds' sigmoids, computed here from the PyTorch models."""
    with torch.no_grad():
        probabilities = [torch.sigmoid(model(torch.from_numpy(batch))) for model in predictor.models]
    return torch.stack(probabilities).mean(0).numpy()


def _model_inputs(predictor: Predictor, folder: Path, size: tuple[int, int]) -> np.ndarray:
    images = [read_image(path, path.name) for path in sorted(folder.glob("test_*.jpg"))]
    config = predictor.config.model_copy(
        update={
            "image": predictor.config.image.model_copy(
                update={"image_height": size[0], "image_width": size[1]}
            )
        }
    )
    return np.stack([Predictor([], config).preprocess(image) for image in images])


# --- graphs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "batch"), [(MODEL_SIZE, 4), ((128, 160), 1)])
def test_onnx_ensemble_scores_like_pytorch(predictor: Predictor, session, images: Path, size, batch):
    batch_inputs = _model_inputs(predictor, images, size)[:batch]
    exported = session.run(None, {"images": batch_inputs})[0]
    expected = _ensemble_probabilities(predictor, batch_inputs)
    assert exported.shape == (batch, 1, *size)
    assert np.abs(exported - expected).max() < 1e-3


def test_cli_exports_torchscript_beside_the_fold(experiment: Path, tmp_path: Path):
    """TorchScript here: building the package and the fallback test export ONNX already."""
    fold = tmp_path / "fold0"
    fold.mkdir()
    (fold / "checkpoint.ckpt").symlink_to(experiment / "fold0/checkpoint.ckpt")
    result = CliRunner().invoke(app, ["export", str(fold), "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in fold.iterdir()) == ["checkpoint.ckpt", "model.pt"]
    batch = np.random.default_rng(0).normal(size=(3, 3, 96, 64)).astype(np.float32)
    got = EXPORT_FORMATS["torchscript"].runner(fold / "model.pt")(batch)
    model = load_checkpoint(fold / "checkpoint.ckpt")[0]
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(batch))).numpy()
    assert np.abs(got - expected).max() < 1e-3


def test_onnx_falls_back_to_the_legacy_exporter(experiment: Path, tmp_path: Path, monkeypatch, caplog):
    def unsupported(*args):
        raise RuntimeError("this model cannot be traced by torch.export")

    monkeypatch.setitem(onnx_export.ONNX_EXPORTERS, "dynamo", unsupported)
    target = export_model(experiment / "fold0", tmp_path / "model.onnx")
    assert target.is_file()
    assert "cannot be traced by torch.export" in caplog.text


def test_an_export_that_scores_differently_is_not_written(experiment: Path, tmp_path: Path, monkeypatch):
    wrong = onnx_export.ExportFormat(
        ".pt",
        lambda module, example, target: target.write_bytes(b"graph"),
        lambda path: lambda x: x[:, :1] * 0,
    )
    monkeypatch.setitem(onnx_export.EXPORT_FORMATS, "torchscript", wrong)
    with pytest.raises(ModelError, match="does not score like the PyTorch model"):
        export_model(experiment / "fold0", tmp_path / "model.pt", "torchscript")
    assert not list(tmp_path.iterdir()), "neither the file nor its temporary copy is left"


def test_what_is_not_a_model_is_refused(tmp_path: Path):
    fake = tmp_path / "checkpoint.ckpt"
    fake.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=str(fake)):
        export_model(fake, tmp_path / "model.onnx")
    with pytest.raises(ModelError, match=str(fake)):
        build_package(fake, tmp_path / "package")
    with pytest.raises(ModelError, match="empty does not exist"):
        export_model(tmp_path / "empty", tmp_path / "model.onnx")
    with pytest.raises(SmokesegError, match="onnx, torchscript"):
        export_model(fake, tmp_path / "model.x", "tflite")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint.ckpt"]


def test_cli_refuses_a_package_with_an_output_file(experiment: Path, tmp_path: Path):
    mixed = ["export", str(experiment), "--package", str(tmp_path / "p"), "--output", str(tmp_path / "m")]
    result = CliRunner().invoke(app, mixed)
    assert isinstance(result.exception, SmokesegError) and "--package" in str(result.exception)
    assert not list(tmp_path.iterdir())


def test_cli_packages_with_other_scoring_keys(experiment: Path, tmp_path: Path):
    """export --set: the package scores with those keys (its settings and config), like predict --set;
    the model's own folder keeps its own; a key that shaped the weights, or --set without --package,
    is refused and writes nothing."""
    keys = ["--set", "prediction.probability_threshold=0.3"]
    keys += ["--set", "prediction.test_time_augmentations=[horizontal_flip]"]
    result = CliRunner().invoke(app, ["export", str(experiment), "--package", str(tmp_path / "p"), *keys])
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "p" / SETTINGS_NAME).read_text())
    assert settings["probability_threshold"] == 0.3
    assert settings["test_time_augmentations"] == ["horizontal_flip"]
    assert load_config(tmp_path / "p" / "config.yaml").prediction.probability_threshold == 0.3
    own = Predictor.from_path(experiment).config.prediction
    assert own.probability_threshold != 0.3 and own.test_time_augmentations == ["rotate90"]

    bare = CliRunner().invoke(app, ["export", str(experiment), "--output", str(tmp_path / "m.onnx"), *keys])
    assert isinstance(bare.exception, SmokesegError) and "--package" in str(bare.exception)
    shaped = ["export", str(experiment), "--package", str(tmp_path / "q"), "--set", "training.epochs=3"]
    refused = CliRunner().invoke(app, shaped)
    assert isinstance(refused.exception, SmokesegError) and "training.epochs" in str(refused.exception)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["p"]


# --- the package's contents and its numpy re-implementations --------------------------------------


def test_package_holds_the_model_settings_and_minimal_requirements(package: Path, predictor: Predictor):
    assert sorted(path.name for path in package.iterdir()) == [
        "README.md",
        "config.yaml",
        "model.onnx",
        "requirements.txt",
        "score.py",
        "scoring.json",
    ]
    assert not list(package.parent.glob(".*")), "no staging folder is left beside the package"
    requirements = (package / "requirements.txt").read_text().split()
    assert sorted(line.split(">=")[0] for line in requirements) == ["numpy", "onnxruntime", "pillow"]
    settings = json.loads((package / "scoring.json").read_text())
    assert settings["folds"] == 2
    assert (settings["image_height"], settings["image_width"]) == MODEL_SIZE
    assert settings["probability_threshold"] == predictor.threshold
    assert settings["test_time_augmentations"] == ["rotate90"]
    assert settings["rle_order"] == "F" and settings["normalization"]["name"] == "Simple"
    assert load_config(package / "config.yaml") == predictor.config
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse((package / "score.py").read_text()))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported - set(sys.stdlib_module_names) == {"numpy", "onnxruntime", "PIL", "pandas", "pyarrow"}
    assert "python score.py" in (package / "README.md").read_text()


def test_a_package_replaces_an_earlier_one_but_no_other_folder(experiment: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(
        package_module, "write_model", lambda predictor, target, fmt: target.write_bytes(b"x")
    )
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "scoring.json").write_text("{}")
    (earlier / "stale.txt").write_text("from an earlier package")
    build_package(experiment, earlier)
    assert not (earlier / "stale.txt").exists() and json.loads((earlier / "scoring.json").read_text())
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(SmokesegError, match="not a scoring package"):
        build_package(experiment, occupied)
    assert [path.name for path in occupied.iterdir()] == ["notes.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["earlier", "occupied"], "no staging left"


@pytest.mark.parametrize("shrink", ["area", "linear"])
def test_resize_is_the_model_resize_bit_for_bit(score: ModuleType, shrink: str):
    """Shrinking (both sides, one side, whole factors) and growing, as albumentations calls OpenCV."""
    rng = np.random.default_rng(1)
    sizes = [((90, 140), MODEL_SIZE), ((128, 192), MODEL_SIZE), ((50, 70), MODEL_SIZE), ((1, 7), (5, 3))]
    sizes += [((300, 900), (100, 300)), ((1080, 1920), (256, 256)), ((40, 400), MODEL_SIZE)]
    sizes += [(tuple(rng.integers(1, 400, 2)), tuple(rng.integers(1, 400, 2))) for _ in range(40)]
    area_for_downscale = "image" if shrink == "area" else None
    for (height, width), (to_height, to_width) in sizes:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        resize = A.Resize(int(to_height), int(to_width), area_for_downscale=area_for_downscale, p=1)
        expected = resize(image=image)["image"]
        np.testing.assert_array_equal(score.resize_image(image, to_height, to_width, shrink), expected)
        values = rng.random((to_height, to_width)).astype(np.float32)
        expected = cv2.resize(values, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(score.resize_probabilities(values, height, width), expected, atol=1e-4)


VIEWS = {
    "resize": {},
    "native": {"image": {"resolution": "native", "max_side": 120}},
    "native long side": {"image": {"resolution": "native", "long_side": 160}},
    "native context mean": {"image": {"resolution": "native", "long_side": 160, "context_pass": "mean"}},
    "native context max": {"image": {"resolution": "native", "max_side": 120, "context_pass": "max"}},
    "native scales, context mean": {
        "image": {"resolution": "native", "long_side": 160, "context_pass": "mean"},
        "prediction": {"test_time_scales": [1.5, 0.75]},
    },
    "custom resize": {"augmentation": {"augmentations_strategy": "Custom"}},
}


def _config_with(config, **sections):
    """``config`` with some keys of some sections replaced."""
    return config.model_copy(
        update={name: getattr(config, name).model_copy(update=keys) for name, keys in sections.items()}
    )


@pytest.mark.parametrize("view", sorted(VIEWS))
@pytest.mark.parametrize("normalization", sorted(NORMALIZATIONS))
def test_preprocessing_equals_the_predictors(
    score: ModuleType, predictor: Predictor, images: Path, normalization: str, view: str
):
    config = _config_with(predictor.config, **VIEWS[view])
    config = _config_with(config, image={"image_normalization": normalization})
    reference = Predictor([], config)
    settings = scoring_settings(reference)
    for path in sorted(images.rglob("*.*")):
        if path.name != "broken.jpg":
            image = read_image(path, path.name)
            np.testing.assert_array_equal(score.read_image(path), image)
            if config.image.resolution == "native":  # whole frames are first brought to a side
                side, enlarge = config.image.native_fit()
                np.testing.assert_array_equal(
                    score.fit_to_side(image, side, enlarge), fit_to_size(image, (side, side), enlarge)
                )
            np.testing.assert_array_equal(score.preprocess(image, settings), reference.preprocess(image))


@pytest.mark.parametrize("view", [name for name in sorted(VIEWS) if name.startswith("native")])
def test_native_resolution_scores_like_the_predictor(
    score: ModuleType, predictor: Predictor, package: Path, images: Path, tmp_path: Path, view: str
):
    """Whole frames, padded, shrunk above max_side or brought to long_side: the same graph, scored
    the native way, at other scales too, and with a context pass also resized to the model size and
    combined."""
    native = Predictor(predictor.models, _config_with(predictor.config, **VIEWS[view]))
    (tmp_path / "model.onnx").symlink_to(package / "model.onnx")
    settings = scoring_settings(native)
    context_pass = native.config.image.context_pass
    assert settings["context_pass"] == context_pass
    described = package_module._describe_model_input(settings)
    assert (f"combined by their {context_pass}" in described) == (context_pass != "none")
    scales = native.config.prediction.test_time_scales
    assert settings["test_time_scales"] == scales
    assert ("also scored scaled by 1.5, 0.75" in described) == bool(scales)
    (tmp_path / "scoring.json").write_text(json.dumps(settings))
    frames = [read_image(images / name, name) for name in ("double.png", "nested/small.png")]
    got = score.Scorer(tmp_path).probabilities(frames)
    for mine, expected in zip(got, native.predict_images(frames), strict=True):
        assert mine.shape == expected.shape
        assert np.abs(mine - expected).max() < 1e-3


@pytest.mark.parametrize("name", sorted(CONTEXT_PASSES))
def test_context_passes_combine_as_the_predictors(score: ModuleType, name: str):
    native, context = np.random.default_rng(4).random((2, 1, 1, 40, 60)).astype(np.float32)
    expected = CONTEXT_PASSES[name](torch.from_numpy(native), torch.from_numpy(context)).numpy()
    np.testing.assert_allclose(score.CONTEXT_PASSES[name](native, context), expected, atol=1e-7)


def test_an_inference_pipeline_score_py_cannot_mirror_is_refused(predictor: Predictor, monkeypatch):
    monkeypatch.setattr(predictor, "transform", A.Compose([A.CLAHE(p=1), A.Resize(*MODEL_SIZE)]))
    with pytest.raises(SmokesegError, match="smokeseg predict"):
        scoring_settings(predictor)


@pytest.mark.parametrize("name", sorted(TEST_TIME_AUGMENTATIONS))
def test_test_time_augmentations_equal_the_predictors(score: ModuleType, name: str):
    batch = np.random.default_rng(3).random((2, 3, 64, 96)).astype(np.float32)
    forward, inverse = TEST_TIME_AUGMENTATIONS[name]
    numpy_forward, numpy_inverse = score.TEST_TIME_AUGMENTATIONS[name]
    viewed = forward(torch.from_numpy(batch)).numpy()
    np.testing.assert_array_equal(numpy_forward(batch), viewed)
    np.testing.assert_array_equal(
        numpy_inverse(viewed[:, :1]), inverse(torch.from_numpy(viewed[:, :1])).numpy()
    )


def test_rle_and_verdict_equal_smokesegs(score: ModuleType):
    rng = np.random.default_rng(2)
    for _ in range(60):
        height, width = (int(side) for side in rng.integers(2, 120, 2))
        noise = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), rng.uniform(0.5, 4))
        probabilities = (noise - noise.min()) / (np.ptp(noise) + 1e-9)
        threshold, minimum = float(rng.uniform(0.2, 0.8)), int(rng.integers(1, 30))
        expected = smoke_verdict(probabilities, threshold, minimum)
        smoke, confidence, boxes = score.smoke_verdict(probabilities, threshold, minimum)
        assert (smoke, confidence) == (expected.smoke, expected.confidence)
        assert boxes == expected.boxes
        for order in ("F", "C"):
            assert score.rle_encode(probabilities > threshold, order) == rle_encode(
                probabilities > threshold, order
            )


def test_regions_of_equal_area_come_in_one_order(score: ModuleType):
    """Raster order of each region's first pixel, which neither OpenCV's 2x2-block numbering nor the
    boxes' top-left corners give."""
    probabilities = np.zeros((10, 14), np.float32)
    probabilities[0, 6:10] = 1  # first pixel (row 0, column 6)
    probabilities[1, 0:4] = 1  # first pixel (row 1, column 0): OpenCV numbers this region first
    probabilities[4:7, 4:8] = probabilities[4, 8] = 1  # first pixel (4, 4), box corner (4, 4)
    for row, column in [(4, 12), (5, 11), (6, 10), (7, 9)]:  # first pixel (4, 12), box corner (4, 0)
        probabilities[row, column] = 1
    probabilities[8, 0:9] = 1
    expected = [[4, 4, 9, 7, 13, 1.0], [0, 4, 13, 9, 13, 1.0], [6, 0, 10, 1, 4, 1.0], [0, 1, 4, 2, 4, 1.0]]
    assert smoke_verdict(probabilities, 0.5, 4).boxes == expected
    assert score.smoke_verdict(probabilities, 0.5, 4)[2] == expected


# --- the package's table ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smokeseg_tables(predictor: Predictor, images: Path, tmp_path_factory) -> dict[str, pd.DataFrame]:
    """What `smokeseg predict` writes for the images, in each table format."""
    output = tmp_path_factory.mktemp("predict")
    tables = {}
    for table_format, read in (("csv", pd.read_csv), ("parquet", pd.read_parquet)):
        tables[table_format] = read(predict(predictor, collect_inputs([images]), output, table_format).table)
    return tables


def assert_same_predictions(ours: pd.DataFrame, theirs: pd.DataFrame, predictor: Predictor, images: Path):
    """Same rows, columns and types; equal masks, verdicts and boxes, except that a pixel within
    NEAR_THRESHOLD of the threshold may fall on the other side of it."""
    assert list(ours.columns) == list(theirs.columns)
    assert ours.dtypes.equals(theirs.dtypes)
    assert ours["image_id"].tolist() == theirs["image_id"].tolist()
    assert ours["error"].isna().tolist() == theirs["error"].isna().tolist()
    assert ours["error"].notna().sum() == 1, "broken.jpg"
    scored = theirs["error"].isna().to_numpy()
    ours, theirs = ours[scored].reset_index(drop=True), theirs[scored].reset_index(drop=True)
    for column in ("height", "width"):
        assert ours[column].tolist() == theirs[column].tolist(), column
    # smoke_fraction follows the mask: checked below, with the same allowance at the threshold.
    for column in ("probability_max", "probability_mean", "confidence"):
        np.testing.assert_allclose(ours[column], theirs[column], atol=1e-3, err_msg=column)
    for mine, reference in zip(ours.itertuples(), theirs.itertuples(), strict=True):
        if mine.rle_mask != reference.rle_mask:
            probabilities = predictor.predict_images([read_image(images / mine.image_id, mine.image_id)])[0]
            mask = rle_decode(mine.rle_mask, int(mine.height), int(mine.width))
            differ = mask != (probabilities > predictor.threshold)
            assert (np.abs(probabilities[differ] - predictor.threshold) < NEAR_THRESHOLD).all()
            continue
        assert mine.smoke_fraction == pytest.approx(reference.smoke_fraction, abs=1e-12)
        assert mine.smoke == reference.smoke, mine.image_id
        boxes = [
            json.loads(cell) if isinstance(cell, str) else cell for cell in (mine.boxes, reference.boxes)
        ]
        mine_boxes, reference_boxes = (
            np.reshape([np.asarray(b, float) for b in each], (-1, 6)) for each in boxes
        )
        np.testing.assert_allclose(mine_boxes, reference_boxes, atol=1e-4)  # in order: one rule orders both


@pytest.mark.parametrize("table_format", ["csv", "parquet"])
def test_package_writes_the_table_smokeseg_predict_writes(
    score: ModuleType,
    predictor: Predictor,
    images: Path,
    smokeseg_tables: dict[str, pd.DataFrame],
    tmp_path: Path,
    table_format: str,
    capsys,
):
    assert score.main([str(images), "--output", str(tmp_path), "--format", table_format]) == 0
    assert "1 not scored" in capsys.readouterr().out
    read = pd.read_csv if table_format == "csv" else pd.read_parquet
    ours = read(tmp_path / f"predictions.{table_format}")
    assert_same_predictions(ours, smokeseg_tables[table_format], predictor, images)


def test_package_table_is_readable_by_others_and_errors_name_the_file(
    score: ModuleType, images: Path, tmp_path: Path
):
    """As `smokeseg predict` writes it: mode 0644 under umask 022, not mkstemp's 0600; and a file Pillow
    cannot read is named, not the in-memory stream it was read from."""
    umask = os.umask(0o022)
    try:
        assert score.main([str(images / "broken.jpg"), str(images / "double.png"), "-o", str(tmp_path)]) == 0
    finally:
        os.umask(umask)
    table = tmp_path / "predictions.csv"
    assert table.stat().st_mode & 0o777 == 0o644
    error = pd.read_csv(table).set_index("image_id").loc["broken.jpg", "error"]
    assert "broken.jpg is not an image Pillow can read" in error and "BytesIO" not in error


def test_package_fails_when_no_image_could_be_scored_and_keeps_the_columns(
    score: ModuleType, images: Path, smokeseg_tables: dict[str, pd.DataFrame], tmp_path: Path
):
    for table_format, read in (("csv", pd.read_csv), ("parquet", pd.read_parquet)):
        arguments = [str(images / "broken.jpg"), "-o", str(tmp_path), "--format", table_format]
        assert score.main(arguments) == 1
        failed = read(tmp_path / f"predictions.{table_format}")
        assert list(failed.columns) == list(smokeseg_tables[table_format].columns)
        if table_format == "parquet":
            sizes_and_scores = ["height", "width", "smoke_fraction", "probability_max", "confidence"]
            assert failed.dtypes[sizes_and_scores].equals(smokeseg_tables["parquet"].dtypes[sizes_and_scores])


def test_package_gives_files_that_share_a_stem_their_own_rows(score: ModuleType, tmp_path: Path):
    """The ids `smokeseg predict` gives them: the file names, extensions kept."""
    folder = tmp_path / "same_stem"
    folder.mkdir()
    for name in ("image.bmp", "image.tiff"):
        Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(folder / name)
    assert [image_id for image_id, _ in score.find_images([folder])] == ["image.bmp", "image.tiff"]
    assert score.main([str(folder), "-o", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out/predictions.csv")
    assert table["image_id"].tolist() == ["image.bmp", "image.tiff"] and table["error"].isna().all()


@pytest.mark.parametrize("disk", ["read-only", "full"])
def test_package_checks_its_output_folder_before_scoring(
    score: ModuleType, images: Path, small_filesystem, monkeypatch, capsys, disk: str
):
    mount = small_filesystem(read_only=True) if disk == "read-only" else small_filesystem(free_bytes=0)
    monkeypatch.setattr(score, "Scorer", lambda *args, **kwargs: pytest.fail("scored before the check"))
    assert score.main([str(images), "-o", str(mount / "out")]) == 2
    stderr = capsys.readouterr().err
    assert re.fullmatch(rf"Error: Cannot write {mount}\S*: (Read-only|No space).*output folder\.\n", stderr)


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_package_refuses_images_above_the_pixel_limit_from_the_header(
    score: ModuleType, images: Path, tmp_path: Path, monkeypatch, capsys
):
    folder = tmp_path / "to_score"
    folder.mkdir()
    shutil.copy(images / "double.png", folder)
    (folder / "big.png").write_bytes(png_claiming(10000, 10000))
    assert score.main([str(folder), "-o", str(tmp_path / "out")]) == 0
    errors = pd.read_csv(tmp_path / "out/predictions.csv").set_index("image_id")["error"]
    assert re.search(r"big.png is too large.*10000x10000.*SMOKESEG_MAX_IMAGE_PIXELS", errors["big.png"])
    assert pd.isna(errors["double.png"])
    monkeypatch.setenv("SMOKESEG_MAX_IMAGE_PIXELS", str(2 * MODEL_SIZE[0] * 2 * MODEL_SIZE[1] - 1))
    assert score.main([str(folder), "-o", str(tmp_path / "out")]) == 1, "double.png is now one pixel too many"
    monkeypatch.setenv("SMOKESEG_MAX_IMAGE_PIXELS", "lots")
    assert score.main([str(folder), "-o", str(tmp_path / "out")]) == 2
    assert "SMOKESEG_MAX_IMAGE_PIXELS=lots is not" in capsys.readouterr().err


def _requirements_closure(requirements: Path) -> list[importlib.metadata.Distribution]:
    """The installed distributions requirements.txt names, and those they require, as pip would resolve
    them; each must satisfy its line, or the check would prove nothing about the package's requirements."""
    wanted = [Requirement(line) for line in requirements.read_text().splitlines() if line.strip()]
    found: dict[str, importlib.metadata.Distribution] = {}
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{requirement} (for the package) is not installed here; pip install it")
        assert requirement.specifier.contains(distribution.version, prereleases=True), (
            f"installed {name} {distribution.version} does not satisfy {requirement}"
        )
        found[name] = distribution
        for line in distribution.requires or []:
            needed = Requirement(line)
            if needed.marker is None or needed.marker.evaluate({"extra": ""}):
                wanted.append(needed)
    return list(found.values())


def _install_offline(distributions: list[importlib.metadata.Distribution], site_packages: Path) -> None:
    """What `pip install` would unpack, linked from this environment: each distribution's top-level
    packages and its .dist-info, and nothing else (no torch, no smokeseg), without the network."""
    for distribution in distributions:
        assert distribution.files, f"{distribution.metadata['Name']} has no RECORD; reinstall it with pip"
        tops = {file.parts[0] for file in distribution.files if file.parts[0] != ".."}
        for top in sorted(tops):
            link = site_packages / top
            if not link.exists():
                link.symlink_to(Path(distribution.locate_file(top)).resolve())


def test_package_runs_in_a_fresh_virtual_environment(
    package: Path,
    predictor: Predictor,
    images: Path,
    smokeseg_tables: dict[str, pd.DataFrame],
    tmp_path: Path,
):
    """Only requirements.txt installed, no torch, no smokeseg: proof the package is self-contained."""
    venv = tmp_path / "venv"
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, env=env)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    where = [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    site_packages = Path(subprocess.run(where, capture_output=True, text=True, check=True).stdout.strip())
    _install_offline(_requirements_closure(package / "requirements.txt"), site_packages)
    for absent in ("torch", "lightning", "smokeseg", "cv2", "pandas"):
        assert subprocess.run([python, "-c", f"import {absent}"], capture_output=True, env=env).returncode
    scored = subprocess.run(
        [python, package / "score.py", images, "--output", tmp_path / "out"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert scored.returncode == 0, scored.stdout + scored.stderr
    ours = pd.read_csv(tmp_path / "out/predictions.csv")
    assert_same_predictions(ours, smokeseg_tables["csv"], predictor, images)


@pytest.mark.shared
def test_real_smoke_images_score_alike_exported(
    smoke_ht_config_path: Path, score: ModuleType, package: Path, predictor: Predictor, session
):
    paths = sorted((smoke_ht_config_path.parent / SMOKE_HT_TEST_IMAGES).glob("*.jpg"))[:4]
    assert paths, f"no test images under {smoke_ht_config_path.parent / SMOKE_HT_TEST_IMAGES}"
    settings = json.loads((package / "scoring.json").read_text())
    images = [read_image(path, path.name) for path in paths]
    for path, image in zip(paths, images, strict=True):
        np.testing.assert_array_equal(score.read_image(path), image)
        np.testing.assert_array_equal(score.preprocess(image, settings), predictor.preprocess(image))
    batch = np.stack([predictor.preprocess(image) for image in images])
    for inputs in (batch, batch[:1].swapaxes(-1, -2).copy()):  # batch of 4 at 64x96, one at 96x64
        exported = session.run(None, {"images": inputs})[0]
        assert np.abs(exported - _ensemble_probabilities(predictor, inputs)).max() < 1e-3


def test_smokeseg_predicts_with_an_exported_package_like_with_its_checkpoints(
    package: Path, predictor: Predictor, images: Path
):
    from_package = Predictor.from_path(package)
    frames = [read_image(path, path.name) for path in sorted(images.glob("test_*.jpg"))]
    expected = predictor.predict_images(frames)
    for got, want in zip(from_package.predict_images(frames), expected, strict=True):
        assert np.abs(got - want).max() < 1e-3
    assert from_package.threshold == predictor.threshold
