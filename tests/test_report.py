"""The HTML report: built from a fake training output folder, no training needed."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from smokeseg.config.load import save_config
from smokeseg.config.schema import DatasetConfig, ExperimentConfig
from smokeseg.data.rle import rle_decode, rle_encode
from smokeseg.errors import SmokesegError
from smokeseg.inference.scoring import smoke_verdict
from smokeseg.metrics import region_outcome
from smokeseg.report import overlay_mask, write_report
from smokeseg.report.html import CHARTS, FALSE_REGION_COLOR, chart_figure
from smokeseg.report.overlay import mask_edge

HEIGHT, WIDTH = 36, 48
LOSSES = {"img_a.png": 0.2, "img_b.png": 0.9, "img_c.png": 0.5, "img_d.png": 0.05}


def _blob(seed: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[5 + seed : 20 + seed, 10 + 2 * seed : 30 + 2 * seed] = True
    return mask


def _make_dataset(data_folder: Path) -> None:
    """Images plus the training table naming them, as the fold's config points at."""
    data_folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in LOSSES:
        pixels = rng.integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(data_folder / name)
    table = pd.DataFrame(
        {
            "image_id": list(LOSSES),
            "class_id": "smoke",
            "rle_mask": [rle_encode(_blob(i)) for i in range(len(LOSSES))],
        }
    )
    table.to_parquet(data_folder / "train.pq")


def _make_fold(fold_dir: Path, data_folder: Path, fold: int = 0) -> Path:
    fold_dir.mkdir(parents=True)
    dataset = DatasetConfig(data_folder=data_folder, train_dataframe=data_folder / "train.pq")
    config = ExperimentConfig(experiment_name="smoke_test", dataset=dataset)
    save_config(config, fold_dir / "config.yaml")
    steps = list(range(4, 404, 4))
    charts = {
        "train_loss": {"step": steps, "value": [1.0 / (1 + i / 10) + 0.05 * (i % 3) for i in range(100)]},
        "learning_rate": {"step": steps, "value": [1e-3 * (1 - i / 100) for i in range(100)]},
        "validation_loss": {"step": [200, 400], "value": [0.6, 0.4]},
        "validation_IoU": {"step": [200, 400], "value": [0.5, 0.61]},
        "validation_Dice": {"step": [200, 400], "value": [0.6, 0.7]},
    }
    (fold_dir / "charts.json").write_text(json.dumps(charts))
    metrics = {
        "fold": fold,
        "validation_IoU": 0.61 + fold / 100,
        "validation_Dice": 0.7,
        "validation_loss": 0.4,
        "validation_region_recall": 0.5 + fold / 10,
        "validation_image_AUROC": None,  # no smoke-free validation image
        "test_IoU": 0.5,
        "epochs": 5,
        "validation_observations": len(LOSSES),
        "seed": 123,
        "wall_time_s": 80.1,
    }
    (fold_dir / "metrics.json").write_text(json.dumps(metrics))
    rows = []
    for index, (name, loss) in enumerate(LOSSES.items()):
        truth, predicted = _blob(index), _blob(index + 1)
        rows.append(
            {
                "image_id": name,
                "rle_mask": rle_encode(predicted, order="F"),
                "true_rle_mask": rle_encode(truth, order="F"),
                "height": HEIGHT,
                "width": WIDTH,
                "smoke_fraction": float(predicted.mean()),
                "probability_max": 0.9,
                "probability_mean": 0.2,
                "iou": 0.5,
                "dice": 0.6,
                "loss": loss,
            }
        )
    pd.DataFrame(rows).to_parquet(fold_dir / "validation_predictions.parquet")
    return fold_dir


@pytest.fixture
def fold_dir(tmp_path: Path) -> Path:
    _make_dataset(tmp_path / "images")
    return _make_fold(tmp_path / "output" / "smoke_test" / "fold0", tmp_path / "images")


def _gallery_order(page: str) -> list[str]:
    return re.findall(r'<figure class="tile" data-image-id="([^"]+)"', page)


def test_fold_report_has_charts_metrics_and_worst_first_gallery(fold_dir: Path) -> None:
    report = write_report(fold_dir)
    assert report == fold_dir / "report.html"
    page = report.read_text(encoding="utf-8")
    for title in ("Learning rate", "Train batch loss", "Validation loss", "Validation IoU and Dice"):
        match = re.search(rf'<img src="data:image/png;base64,([^"]+)" alt="{title} chart', page)
        assert match, title
        assert Image.open(io.BytesIO(base64.b64decode(match.group(1)))).format == "PNG"
    assert _gallery_order(page) == ["img_b.png", "img_c.png", "img_a.png", "img_d.png"]
    assert "smoke_test" in page
    assert "0.6100" in page and "1 min 20 s" in page and "test IoU" in page
    pngs = sorted(path.name for path in (fold_dir / "report_png").glob("*.png"))
    assert "fold0_validation_metric.png" in pngs
    assert sum("gallery" in name for name in pngs) == 4


def test_gallery_size_limits_tiles_and_rerun_drops_stale_pngs(fold_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "elsewhere"
    write_report(fold_dir, out_dir)
    page = write_report(fold_dir, out_dir, gallery_size=2).read_text(encoding="utf-8")
    assert _gallery_order(page) == ["img_b.png", "img_c.png"]
    assert len(list((out_dir / "report_png").glob("*gallery*.png"))) == 2
    assert not (fold_dir / "report.html").exists()


def test_experiment_folder_gets_a_section_per_fold_and_a_summary(tmp_path: Path) -> None:
    _make_dataset(tmp_path / "images")
    experiment = tmp_path / "output" / "smoke_test"
    for fold in (1, 0):
        _make_fold(experiment / f"fold{fold}", tmp_path / "images", fold)
    page = write_report(experiment).read_text(encoding="utf-8")
    assert page.index('id="fold0"') < page.index('id="fold1"')
    assert '<tr class="mean"><th>mean</th><td>0.6150</td>' in page
    summary = page[page.index('<table class="summary">') : page.index("</table>")]
    assert "<th>validation region recall</th>" in summary and "<td>0.5500</td>" in summary
    assert "<th>validation image AUROC</th>" in summary
    assert len(_gallery_order(page)) == 8


def test_folder_without_outputs_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(SmokesegError, match=r"no charts\.json found.*smokeseg train CONFIG") as error:
        write_report(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_missing_image_gives_a_placeholder_tile(fold_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "images" / "img_c.png").unlink()
    page = write_report(fold_dir).read_text(encoding="utf-8")
    tile = page[page.index('data-image-id="img_c.png"') :].split("</figure>")[0]
    assert 'class="placeholder"' in tile and "img_c.png" in tile
    assert page.count('alt="img_') == 3


def test_run_stopped_early_still_reports(fold_dir: Path) -> None:
    (fold_dir / "charts.json").write_text(json.dumps({"train_loss": {"step": [], "value": []}}))
    (fold_dir / "metrics.json").unlink()
    (fold_dir / "validation_predictions.parquet").unlink()
    (fold_dir / "config.yaml").unlink()
    page = write_report(fold_dir).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4
    assert "metrics.json is missing" in page and "no validation gallery" in page


CLOUD = (slice(28, 34), slice(2, 8))  # 36 px, far from every blob


def _add_clouds(fold_dir: Path, clouds: dict[str, int]) -> None:
    """Give images' predictions ``n`` cloud regions touching no smoke, counted as training counts them."""
    path = fold_dir / "validation_predictions.parquet"
    table = pd.read_parquet(path)
    rows = []
    for row in table.itertuples(index=False):
        predicted = rle_decode(row.rle_mask, HEIGHT, WIDTH, "F")
        truth = rle_decode(row.true_rle_mask, HEIGHT, WIDTH, "F")
        for n in range(clouds.get(row.image_id, 0)):
            predicted[CLOUD[0], slice(CLOUD[1].start + 8 * n, CLOUD[1].stop + 8 * n)] = True
        false, hit = region_outcome(smoke_verdict(predicted.astype(np.float32), 0.5).regions, truth)
        rows.append({**row._asdict(), "rle_mask": rle_encode(predicted, order="F"), "false_regions": false})
        assert hit, "every blob prediction overlaps its truth"
    pd.DataFrame(rows).to_parquet(path)


def _tile_pixels(page: str, gallery: str, image_id: str) -> np.ndarray:
    section = page[page.index(f'data-gallery="{gallery}"') :]
    tile = section[section.index(f'data-image-id="{image_id}"') :].split("</figure>")[0]
    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', tile)
    assert encoded, f"{image_id} has no image in the {gallery} gallery"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded.group(1)))).convert("RGB"))


def test_false_alarm_gallery_shows_the_images_with_false_regions_most_first(fold_dir: Path) -> None:
    _add_clouds(fold_dir, {"img_a.png": 2, "img_d.png": 1})
    page = write_report(fold_dir).read_text(encoding="utf-8")
    false_alarms = page[page.index('data-gallery="false-alarms"') :]
    assert _gallery_order(false_alarms) == ["img_a.png", "img_d.png"], "only images with a false region"
    assert "False alarms: validation images with a false region, most first (2 of the 2)" in page
    assert "2 false regions ·" in false_alarms and "1 false region ·" in false_alarms
    # The prediction panel (right of the 6 px gap) colours the clouds, not the region on the smoke.
    tile = _tile_pixels(page, "false-alarms", "img_a.png")
    scale = 320 / WIDTH
    prediction = tile[:, 320 + 6 :]
    orange = np.all(np.abs(prediction.astype(int) - FALSE_REGION_COLOR) < 40, axis=2)
    cloud_rows = slice(int(CLOUD[0].start * scale), int(CLOUD[0].stop * scale))
    cloud_columns = slice(int(CLOUD[1].start * scale), int((CLOUD[1].stop + 8) * scale))
    # The tint blends with the photo; the outline is the colour itself, around each of the two clouds.
    assert orange[cloud_rows, cloud_columns].sum() >= 4 * (cloud_rows.stop - cloud_rows.start)
    outside = orange.copy()
    outside[cloud_rows, cloud_columns] = False
    assert outside.mean() < 0.01, "the region on the smoke is not a false alarm"
    names = [path.name for path in (fold_dir / "report_png").glob("*false_alarm*.png")]
    assert sorted(names) == ["fold0_false_alarm_01_img_a.png", "fold0_false_alarm_02_img_d.png"]
    # One rule for every gallery: the worst-loss tile of the same image draws the same false regions.
    np.testing.assert_array_equal(_tile_pixels(page, "worst", "img_a.png"), tile)
    worst = page[page.index("Validation images, worst loss first") : page.index("False alarms: validation")]
    assert worst.count("false region (touches no true smoke)") == 1, "the worst-loss legend names the colour"


def test_no_false_alarm_gallery_without_false_regions(fold_dir: Path) -> None:
    _add_clouds(fold_dir, {})
    page = write_report(fold_dir).read_text(encoding="utf-8")
    assert "False alarms" not in page and len(_gallery_order(page)) == 4


def test_overlay_tints_inside_outlines_edge_and_leaves_outside() -> None:
    image = np.full((20, 20, 3), 100, dtype=np.uint8)
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:15, 5:15] = True
    out = overlay_mask(image, mask, (255, 0, 0), alpha=0.5, line_width=1)
    assert tuple(out[5, 10]) == (255, 0, 0)
    assert tuple(out[10, 10]) == (178, 50, 50)
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert image[10, 10, 0] == 100


def test_mask_edge_ignores_the_image_border() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[:, :5] = True
    edge = mask_edge(mask)
    assert edge[:, 4].all() and not edge[:, :4].any()


def test_overlay_rejects_a_mask_of_another_size() -> None:
    with pytest.raises(ValueError, match="does not match"):
        overlay_mask(np.zeros((4, 4, 3), np.uint8), np.zeros((3, 4), bool), (0, 255, 0))


def _heights(axes, steps: list[float], values: list[float]) -> np.ndarray:
    """Where points sit on a drawn chart, as a fraction of its height (0 bottom, 1 top)."""
    axes.get_ylim()  # settles the autoscaled limits the transform reads
    return (axes.transScale + axes.transLimits).transform(np.column_stack([steps, values]))[:, 1]


def _validation_loss_axes(steps: list[float], values: list[float]):
    spec = next(spec for spec in CHARTS if spec.name == "validation_loss")
    return chart_figure(spec, {"validation_loss": {"step": steps, "value": values}}).axes[0]


def test_a_first_validation_loss_far_above_the_rest_leaves_the_rest_readable() -> None:
    """The demo run: epoch 1 at 2,300, the rest near 0.3; on a linear axis they were one flat line."""
    steps, values = [100, 200, 300, 400, 500], [2300.0, 0.31, 0.27, 0.25, 0.24]
    axes = _validation_loss_axes(steps, values)
    heights = _heights(axes, steps, values)
    assert heights[0] > 1, "the outlier is above the axis..."
    assert [text.get_text() for text in axes.texts] == ["▲ 2,300"], "...and labelled at its top edge"
    rest = heights[1:]
    assert ((rest >= 0) & (rest <= 1)).all() and rest[0] - rest[-1] > 0.8, "the rest fill the chart"
    assert (-np.diff(rest) > 0.05).all(), "each later epoch is visibly below the one before"


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        ([0.6, 0.4, 0.35, 0.33, 0.3], "linear"),
        ([50.0, 10.0, 2.0, 0.5, 0.3], "log"),
        ([0.5, 0.0, 0.1], "linear"),
    ],
)
def test_a_validation_loss_without_far_outliers_shows_every_point(values: list[float], scale: str) -> None:
    steps = list(range(len(values)))
    axes = _validation_loss_axes(steps, values)
    heights = _heights(axes, steps, values)
    assert axes.get_yscale() == scale and not axes.texts
    assert ((heights >= 0) & (heights <= 1)).all()
    assert (-np.diff(heights[:2]) > 0.05).all()
