"""``smokeseg predict``: input kinds, per-image errors, verdicts, tiling, TTA, and the command end to end.

Most tests use a tiny fully-convolutional model wrapped into the Predictor directly: it scores any
size in milliseconds, and a pixel sees only its 5x5 neighbourhood, which makes tiling checkable.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from conftest import png_claiming
from smokeseg.cli import app, main
from smokeseg.config.load import load_config
from smokeseg.config.schema import ExperimentConfig
from smokeseg.data.normalization import normalize
from smokeseg.data.rle import rle_decode
from smokeseg.data.synthetic import generate_demo_dataset
from smokeseg.errors import ConfigError, DataError, ModelError, OutputError, SmokesegError
from smokeseg.inference.inputs import collect_inputs
from smokeseg.inference.predict import predict
from smokeseg.inference.predictor import Predictor, TileSpec
from smokeseg.inference.scoring import default_min_region_pixels, smoke_verdict, write_table
from smokeseg.model import precision
from smokeseg.training import run
from test_training import TINY

SIZES = {"a.png": (40, 60), "b.png": (33, 17), "c.png": (64, 64)}


def tiny_fcn(seed: int = 0) -> torch.nn.Module:
    """Two 3x3 convolutions: no pooling or normalisation, so any size scores, receptive radius 2."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1)
        )
    with torch.no_grad():
        model[2].weight.mul_(30)  # spread the probabilities over (0, 1), so differences show
    return model


def _config(size: int = 64, tta: tuple[str, ...] = ()) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "image": {"image_height": size, "image_width": size},
            "prediction": {"test_time_augmentations": list(tta)},
        }
    )


def _predictor(**options) -> Predictor:
    return Predictor([tiny_fcn()], _config(), **options)


def _write_images(folder: Path, sizes: dict[str, tuple[int, int]] = SIZES) -> Path:
    rng = np.random.default_rng(0)
    for name, (height, width) in sizes.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _zip(target: Path, members: dict[str, Path]) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for name, path in members.items():
            archive.write(path, name)
    return target


def _predict(inputs: list, output: Path, predictor: Predictor | None = None, **options) -> pd.DataFrame:
    return predict(
        predictor or _predictor(), collect_inputs(inputs, options.pop("data_folder", None)), output, **options
    ).rows


# --- inputs ---------------------------------------------------------------------------------------


def test_every_input_kind_gives_the_same_predictions(tmp_path: Path):
    images = _write_images(tmp_path / "images")
    files = {name: images / name for name in SIZES}
    pd.DataFrame({"image_id": list(SIZES), "class_id": "smoke"}).to_parquet(tmp_path / "test.pq")
    pd.DataFrame({"image_id": list(SIZES)}).to_csv(images / "test.csv", index=False)
    kinds = {
        "files": [str(path) for path in files.values()],
        "folder": [images],
        "glob": [str(images / "*.png")],
        "table beside its images": [images / "test.csv"],
        "table with --data-folder": [tmp_path / "test.pq"],
        "table above its images folder": [tmp_path / "test.pq"],  # as `convert` writes them
        "zip of images": [_zip(tmp_path / "images.zip", files)],
        "zip of a table and images": [
            _zip(
                tmp_path / "dataset.zip",
                {"test.pq": tmp_path / "test.pq", **{f"images/{n}": p for n, p in files.items()}},
            )
        ],
    }
    reference = None
    for kind, inputs in kinds.items():
        rows = _predict(inputs, tmp_path / kind, data_folder=images if "--data-folder" in kind else None)
        assert list(rows["image_id"]) == list(SIZES), kind
        assert (tmp_path / kind / "predictions.parquet").is_file()
        reference = rows if reference is None else reference
        pd.testing.assert_frame_equal(rows, reference, obj=kind)
    assert list(zip(reference["height"], reference["width"], strict=True)) == list(SIZES.values())


def test_ids_stay_apart_and_repeats_are_scored_once(tmp_path: Path):
    cams = _write_images(tmp_path / "cams", {"cam1/x.png": (8, 8), "cam2/x.png": (8, 8)})
    ids = [s.image_id for s in collect_inputs([str(cams / "*" / "x.png"), cams / "cam1" / "x.png", cams])]
    assert ids == ["cam1/x.png", "cam2/x.png"]
    with pytest.raises(DataError, match=r"both be row 'x.png'.*Pass the folder that holds both"):
        collect_inputs([cams / "cam1", cams / "cam2"])


def test_files_that_share_a_stem_get_their_own_rows_and_files(tmp_path: Path):
    images = _write_images(
        tmp_path / "images", {"image.bmp": (8, 8), "image.tiff": (9, 9), "other.png": (7, 7)}
    )
    rows = _predict([images], tmp_path / "out", image_outputs=["masks", "overlays"])
    assert rows["image_id"].tolist() == ["image.bmp", "image.tiff", "other.png"]
    assert rows["error"].isna().all()
    masks = tmp_path / "out/masks"
    assert sorted(path.name for path in masks.iterdir()) == ["image.bmp.png", "image.tiff.png", "other.png"]
    assert Image.open(masks / "image.tiff.png").size == (9, 9)
    assert (tmp_path / "out/overlays/image.bmp.jpg").is_file()
    (images / "image.bmp.png").write_bytes((images / "other.png").read_bytes())  # would write image.bmp.png
    with pytest.raises(DataError, match=r"image.bmp and image.bmp.png would both write masks/image.bmp.png"):
        _predict([images], tmp_path / "again", image_outputs=["masks"])
    assert not (tmp_path / "again").exists(), "refused before scoring"


@pytest.mark.parametrize("kind", ["empty folder", "unmatched glob", "missing file", "not an image"])
def test_inputs_without_images_are_clear_errors(tmp_path: Path, kind: str):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    path = {
        "empty folder": tmp_path / "empty",
        "unmatched glob": tmp_path / "empty" / "*.jpg",
        "missing file": tmp_path / "nope.jpg",
        "not an image": tmp_path / "notes.txt",
    }[kind]
    with pytest.raises(DataError, match=str(path).replace("*", r"\*")):
        collect_inputs([path])


def test_table_naming_missing_images_says_to_pass_the_data_folder(tmp_path: Path):
    pd.DataFrame({"image_id": ["gone.png"]}).to_parquet(tmp_path / "test.pq")
    with pytest.raises(DataError, match="--data-folder"):
        collect_inputs([tmp_path / "test.pq"])


# --- per-image errors and odd sizes ---------------------------------------------------------------


def test_corrupt_image_is_reported_and_the_others_scored(tmp_path: Path, caplog):
    images = _write_images(tmp_path / "images")
    (images / "broken.png").write_bytes(b"not an image")
    with caplog.at_level(logging.ERROR):
        rows = _predict([images], tmp_path / "out", table_format="csv").set_index("image_id")
    assert "broken.png" in rows.loc["broken.png", "error"]
    for foreign in ("on_bad_sample", "BytesIO"):  # training's setting; the stream Pillow read from
        assert foreign not in rows.loc["broken.png", "error"]
    assert pd.isna(rows.loc["broken.png", "rle_mask"])
    scored = rows.drop(index="broken.png")
    assert scored["error"].isna().all() and scored["rle_mask"].notna().all()
    assert "broken.png" in caplog.text
    table = pd.read_csv(tmp_path / "out/predictions.csv")
    assert len(table) == 4 and table["height"].isna().sum() == 1


@pytest.mark.parametrize("table_format", ["csv", "parquet"])
def test_a_table_of_failures_alone_keeps_the_usual_columns(tmp_path: Path, table_format: str):
    images = _write_images(tmp_path / "images", {"ok.png": (8, 8)})
    read = pd.read_csv if table_format == "csv" else pd.read_parquet
    _predict([images], tmp_path / "scored", table_format=table_format)
    (images / "ok.png").write_bytes(b"not an image")
    _predict([images], tmp_path / "failed", table_format=table_format)
    scored, failed = (read(tmp_path / run / f"predictions.{table_format}") for run in ("scored", "failed"))
    assert list(failed.columns) == list(scored.columns) and len(scored.columns) == 12
    if table_format == "parquet":
        sizes_and_scores = ["height", "width", "smoke_fraction", "probability_max", "confidence"]
        assert failed.dtypes[sizes_and_scores].equals(scored.dtypes[sizes_and_scores])


def test_predict_command_fails_when_no_image_could_be_scored(tmp_path: Path, monkeypatch):
    images = _write_images(tmp_path / "images", {"ok.png": (8, 8)})
    monkeypatch.setattr(Predictor, "from_path", lambda *args, **kwargs: _predictor())
    arguments = ["predict", "model", str(images), "-o", str(tmp_path / "out"), "--format", "csv"]
    assert CliRunner().invoke(app, arguments).exit_code == 0
    (images / "ok.png").write_bytes(b"not an image")
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code != 0 and "no image could be scored" in result.output
    assert len(pd.read_csv(tmp_path / "out/predictions.csv").columns) == 12


@pytest.mark.parametrize("disk", ["read-only", "full"])
def test_an_output_folder_that_cannot_be_written_fails_before_scoring(
    tmp_path: Path, small_filesystem, monkeypatch, capsys, disk: str
):
    images = _write_images(tmp_path / "images")
    mount = small_filesystem(read_only=True) if disk == "read-only" else small_filesystem(free_bytes=0)
    with pytest.raises(
        OutputError, match=rf"Cannot write {mount}.*(Read-only|No space).*another output"
    ) as caught:
        predict(
            _predictor(), collect_inputs([images]), mount / "out", progress=lambda *_: pytest.fail("scored")
        )
    assert "\n" not in str(caught.value)
    # The command: one message, no traceback, exit status 2.
    monkeypatch.setattr(Predictor, "from_path", lambda *args, **kwargs: _predictor())
    monkeypatch.setattr(sys, "argv", ["smokeseg", "predict", "model", str(images), "-o", str(mount / "out")])
    with pytest.raises(SystemExit) as exit_status:
        main()
    assert exit_status.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("Error: Cannot write") and "Traceback" not in stderr


def test_a_write_that_fails_during_the_run_is_one_clear_error(tmp_path: Path, small_filesystem):
    images = _write_images(tmp_path / "images")
    nearly_full = small_filesystem(free_bytes=8192)  # the probe fits; the images' files do not
    with pytest.raises(OutputError, match=rf"Cannot write {nearly_full}.*No space left") as caught:
        predict(
            _predictor(),
            collect_inputs([images]),
            nearly_full,
            image_outputs=["masks", "probabilities", "overlays"],
        )
    assert "\n" not in str(caught.value)
    assert not list(nearly_full.rglob("*.tmp")) and not (nearly_full / "predictions.parquet").exists()


@pytest.mark.parametrize("tile", [None, TileSpec()])
def test_one_pixel_image_scores(tmp_path: Path, tile: TileSpec | None):
    images = _write_images(tmp_path / "images", {"dot.png": (1, 1)})
    row = _predict([images], tmp_path / "out", _predictor(tile=tile)).iloc[0]
    assert (row["height"], row["width"]) == (1, 1) and row["error"] is None
    assert not row["smoke"], "one pixel is below the smallest region that makes a verdict"


def test_huge_image_is_refused_untiled_before_decoding(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SMOKESEG_MAX_IMAGE_PIXELS", "150000000")  # decodable, but only tiled
    images = _write_images(tmp_path / "images", {"ok.png": (8, 8)})
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buffer, format="JPEG")
    header = bytearray(buffer.getvalue())  # a 16x16 JPEG whose header claims 11000x10000: nothing to decode
    sof = header.index(b"\xff\xc0")
    header[sof + 5 : sof + 9] = (10000).to_bytes(2, "big") + (11000).to_bytes(2, "big")
    (images / "huge.jpg").write_bytes(bytes(header))

    rows = _predict([images], tmp_path / "out").set_index("image_id")
    assert "11000x10000" in rows.loc["huge.jpg", "error"] and "--tile" in rows.loc["huge.jpg", "error"]
    assert pd.isna(rows.loc["ok.png", "error"])

    image = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(SmokesegError, match="--tile"):
        _predictor(max_untiled_pixels=1000).predict_images([image])
    assert _predictor(max_untiled_pixels=1000, tile=TileSpec()).predict_images([image])[0].shape == (40, 40)


def test_a_png_is_decoded_once_to_be_scored(tmp_path: Path, monkeypatch):
    """The untiled size check reads the header only: Pillow's EXIF lookup on a PNG would decode it first."""
    images = _write_images(tmp_path / "images", {"frame.png": (24, 32)})
    decodes = []
    real_prepare = PngImagePlugin.PngImageFile.load_prepare

    def counted_prepare(image):  # Pillow calls it once each time it decodes a PNG's pixels
        decodes.append(image.size)
        return real_prepare(image)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load_prepare", counted_prepare)
    [prediction] = _predictor().predict_samples(collect_inputs([images]))
    assert prediction.probabilities.shape == (24, 32)
    assert decodes == [(32, 24)]


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("tile", [None, TileSpec()])
def test_an_image_above_the_pixel_limit_is_refused_with_how_to_change_it(tmp_path: Path, monkeypatch, tile):
    """10000x10000 passes the untiled limit (100 megapixels) but not the decoding one, which is checked
    from the header: no Pillow warning, no gigabyte of pixels."""
    images = _write_images(tmp_path / "images", {"ok.png": (8, 8)})
    (images / "big.png").write_bytes(png_claiming(10000, 10000))
    rows = _predict([images], tmp_path / "out", _predictor(tile=tile)).set_index("image_id")
    error = rows.loc["big.png", "error"]
    assert re.search(r"big.png is too large.*10000x10000.*SMOKESEG_MAX_IMAGE_PIXELS", error)
    assert pd.isna(rows.loc["ok.png", "error"])
    monkeypatch.setenv("SMOKESEG_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ConfigError, match="SMOKESEG_MAX_IMAGE_PIXELS=lots is not"):
        _predict([images], tmp_path / "again", _predictor(tile=tile))


def test_file_that_is_not_a_model_is_a_model_error(tmp_path: Path):
    (tmp_path / "garbage.ckpt").write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"garbage\.ckpt is not a checkpoint"):
        Predictor.from_path(tmp_path / "garbage.ckpt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="empty holds no model"):
        Predictor.from_path(tmp_path / "empty")


# --- verdict ---------------------------------------------------------------------------------------


def test_verdict_keeps_regions_of_the_minimum_size_and_boxes_them():
    probabilities = np.full((100, 200), 0.1, np.float32)
    probabilities[10:20, 30:40] = 0.8  # a 10x10 region: smoke
    probabilities[15, 35] = 0.9
    probabilities[50:53, 100:103] = 0.95  # 9 pixels: a speck, below the 16-pixel floor
    verdict = smoke_verdict(probabilities, 0.5)
    assert verdict.smoke
    assert verdict.boxes == [[30, 10, 40, 20, 100, pytest.approx(0.801)]]
    assert verdict.confidence == pytest.approx(0.9), "the peak inside kept regions; the speck does not count"

    probabilities[10:20, 30:40] = 0.1
    speck_only = smoke_verdict(probabilities, 0.5)
    assert not speck_only.smoke and speck_only.boxes == []
    assert speck_only.confidence == pytest.approx(0.05), "1 - the highest probability"
    assert smoke_verdict(probabilities, 0.5, min_region_pixels=9).smoke

    assert default_min_region_pixels(2048, 3072) == 630 and default_min_region_pixels(64, 64) == 16


def test_csv_tables_hold_lists_as_json(tmp_path: Path):
    write_table([{"image_id": "a", "boxes": [[1, 2, 3, 4, 4, 0.5]]}], tmp_path / "t.csv")
    assert json.loads(pd.read_csv(tmp_path / "t.csv")["boxes"][0]) == [[1, 2, 3, 4, 4, 0.5]]


# --- tiling and test-time augmentation -------------------------------------------------------------


def test_tiles_blend_to_the_native_resolution_answer_without_seams():
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((3072, 2048), Image.BICUBIC)).copy()
    image[::7, ::5] = 255 - image[::7, ::5]  # fine detail, so each pixel's neighbourhood matters
    config = _config(size=256)
    native_input = torch.from_numpy(normalize(image, "Simple").transpose(2, 0, 1)[None].copy())
    native = Predictor([tiny_fcn()], config).probabilities_at_model_size(native_input)[0, 0].numpy()

    def tiled(overlap: float) -> np.ndarray:
        predictor = Predictor([tiny_fcn()], config, batch_size=32, tile=TileSpec(overlap=overlap))
        return predictor.predict_images([image])[0]

    # The model pads each tile with zeros, so only the 2 outermost pixels of a tile (its receptive radius)
    # differ from the native answer. The raised-cosine window gives them at most 1.4e-3 of the weight
    # there (its second step over the 64-pixel overlap), so the blend is within that of the native answer.
    bound = 0.5 - 0.5 * np.cos(np.pi * 1.5 / 64)
    blended = tiled(0.25)
    assert blended.shape == (2048, 3072)
    assert np.abs(blended - native).max() < bound

    # No seam: the step across each tile border equals the native image's step there.
    borders = sorted(
        {edge for start in range(0, 3072 - 256, 192) for edge in (start, start + 256)} - {0, 3072}
    )
    for probabilities, seamless in ((blended, True), (tiled(0), False)):
        steps = probabilities[:, borders] - probabilities[:, [b - 1 for b in borders]]
        native_steps = native[:, borders] - native[:, [b - 1 for b in borders]]
        assert (np.abs(steps - native_steps).max() < 2 * bound) == seamless


def test_tile_spec_rejects_sizes_the_model_cannot_take():
    with pytest.raises(SmokesegError, match="multiple of 32"):
        TileSpec(size=100)
    with pytest.raises(SmokesegError, match="more than half"):
        _predictor(tile=TileSpec(overlap=0.6))


def test_tta_is_the_mean_of_the_inverse_mapped_views_over_every_model():
    models = [tiny_fcn(0), tiny_fcn(1)]
    predictor = Predictor(models, _config(tta=("horizontal_flip", "vertical_flip", "rotate90")))
    batch = torch.rand(2, 3, 32, 64)

    def views(model: torch.nn.Module) -> list[torch.Tensor]:
        p = lambda x: torch.sigmoid(model(x))  # noqa: E731
        return [
            p(batch),
            p(batch.flip(-1)).flip(-1),
            p(batch.flip(-2)).flip(-2),
            torch.rot90(p(torch.rot90(batch, 1, (2, 3))), -1, (2, 3)),
        ]

    with torch.no_grad():
        expected = torch.stack([view for model in models for view in views(model)]).mean(0)
    torch.testing.assert_close(predictor.probabilities_at_model_size(batch), expected)


@pytest.mark.parametrize("native_bfloat16", [True, False])
def test_mixed_precision_inference_is_bfloat16_on_capable_cpus(monkeypatch, native_bfloat16: bool):
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: native_bfloat16)
    config = _config().model_copy(
        update={"environment": _config().environment.model_copy(update={"mixed_precision_inference": True})}
    )
    batch = torch.rand(2, 3, 32, 64)
    full = Predictor([tiny_fcn()], _config()).probabilities_at_model_size(batch)
    mixed = Predictor([tiny_fcn()], config)
    assert mixed.autocast_dtype == (torch.bfloat16 if native_bfloat16 else None)
    got = mixed.probabilities_at_model_size(batch)
    if native_bfloat16:
        assert 0 < (got - full).abs().max() < 0.05, "bfloat16 rounds, but only a little"
    else:
        torch.testing.assert_close(got, full)


# --- the command ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def trained_experiment(tmp_path_factory) -> tuple[Path, Path]:
    """(experiment folder, its images folder): one tiny real model, trained once for this file."""
    root = tmp_path_factory.mktemp("predict_model")
    config = generate_demo_dataset(root / "data", n_train=8, n_test=2, size=(64, 96), seed=3)
    run.train(load_config(config, [*TINY, "training.epochs=1"]), root / "exp", progress=False)
    return root / "exp", root / "data" / "images"


def test_predict_command_writes_the_table_and_image_outputs(trained_experiment, tmp_path: Path):
    experiment, images = trained_experiment
    out = tmp_path / "out"
    arguments = ["predict", str(experiment), str(images), "-o", str(out), "--format", "csv", "--tile"]
    result = CliRunner().invoke(app, [*arguments, "--masks", "--probabilities", "--overlays"])
    assert result.exit_code == 0, result.output
    assert "10 images" in result.output

    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 10 and table["error"].isna().all()
    assert {"image_id", "class_id", "rle_mask", "smoke", "confidence", "boxes", "smoke_fraction"} <= set(
        table
    )
    for row in table.itertuples():
        stem = Path(row.image_id).stem
        mask = np.asarray(Image.open(out / "masks" / f"{stem}.png")) > 127
        assert mask.shape == (64, 96)
        assert (rle_decode(str(row.rle_mask) if isinstance(row.rle_mask, str) else "", 64, 96) == mask).all()
        assert Image.open(out / "overlays" / f"{stem}.jpg").size == (96, 64)
        assert Image.open(out / "probabilities" / f"{stem}.png").mode == "L"
        assert len(json.loads(row.boxes)) > 0 if row.smoke else json.loads(row.boxes) == []
    assert not list(out.rglob("*.tmp")), "every file is written atomically"
