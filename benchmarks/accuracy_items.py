"""P2.4's measurements: each candidate change to fast.yaml as one row, trained one after the other in one
run on one machine, judged on grouped validation first.

Every row is `smokeseg train recipes/fast.yaml` with folds grouped by fire and camera scene
(``dataset.group_rule=fire_sequence``), seed 0 (``--seed``), plus the row's overrides. For each row it
records:
- grouped validation (fold 0: smoke-ht training frames of other fires than the fold's training frames):
  IoU, mean per-image IoU, the share of frames with a false region, region recall, image AUROC; this is
  what a recipe is chosen on;
- smoke-ht's 49 test frames: the same scores, and IoU by smoke size (small < 1% of the frame, medium,
  large >= 10%);
- the false-positive rate on smoke-free crops of real camera frames (``false_alarms.py``) at the
  model's operating point, with the recall on the test frames there;
- wall time of the training command, and the training alone (the fold's ``training_time_s``).

Every row is also scored on SMOKE5K's frames of smoke-ht's test scenes, whole, at its threshold and its
operating points (``test_scenes.py``: 600-odd frames of the test cameras, and the smoke-free crops as
windows of them); points not scored there yet are on the next run (delete a point from --out to
measure it again).

Each row's model is then put at operating points chosen on the same grouped validation frames
(``smokeseg tune-threshold``: the threshold with the best mean per-image IoU; the operator's point,
the highest threshold with region recall >= 0.9; and the most region recall while at most 5% of
smoke-free windows of the validation frames alarm, the bar's crop rate), and scored there on the test
frames and the smoke-free crops; rows measured before a point was added get it on the next run.

Rows with ``extra_frames`` also train on SMOKE5K real frames (``dataset.extra_train_dataframe``): of
other fires (the smoke-pretraining frames), or of the fires and scenes of smoke-ht's training images that
hold no test image; each fold leaves out those of its validation frames' scenes. Smoke-free crops count
only when cut from frames of the test scenes (``Judges``).

Hard and random negatives are mined once, after the first row (trained first where a row needs it and
it is not there yet; put at operating points only when named in ``--rows``), from that row's model
(``smokeseg mine-negatives``): from fold 0's training frames and from the SMOKE5K real frames outside
every smoke-ht fire (``smoke_pretrain_table.py``), never from validation or test frames. Rows with
``{hard_start}`` use crops mined the same way by their start itself: a table mined once per start and
fold, no model trained first, so it costs no fine-tuning time (``{hard_start_2}`` and ``{hard_start_3}``:
up to two and three crops a frame). A row's start is its ``start`` (a start other than the recipe's,
whose crops go to folders named after it), else ``--init-from``; a WORKDIR keeps the tables of one
``--init-from`` (the run stops rather than reuse another's).

usage: python benchmarks/accuracy_items.py WORKDIR CROPS_DIR [--rows NAME ...] [--init-from DIR]
       [--seed 0] [--out benchmarks/results-items.json]
Results are written after every row, so a long run that stops keeps what it measured; rows already in
--out are not run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from false_alarms import TABLE_NAME, alarms_at_thresholds, score_model
from machine import cpu_description
from run import FAST, ROOT, SEED_CONFIG, SHARED, SMOKESEG, _timed
from smoke_pretrain_table import SMOKE5K, SMOKE_HT
from test_scenes import TestScenes, score_test_scenes

from smokeseg.config.schema import DatasetConfig
from smokeseg.data.formats import Sample, load_samples
from smokeseg.inference.evaluate import evaluate_at_thresholds
from smokeseg.inference.mining import SUMMARY_NAME
from smokeseg.inference.predictor import Predictor
from smokeseg.layout import TEST_PREDICTIONS_NAME, THRESHOLD_NAME, VALIDATION_PREDICTIONS_NAME
from smokeseg.metrics import scores_by_size
from smokeseg.storage import write_text_atomic

GROUPED = ("dataset.group_rule=fire_sequence", "environment.seed={seed}")
# smoke_pretrain_table.py --real choices -> the file each is written to in WORKDIR (several: smoke5k-A-B.pq).
SMOKE5K_TABLES: dict[tuple[str, ...], str] = {
    ("outside",): "smoke5k_outside_test_fires.pq",
    ("training-scenes",): "smoke5k_training_scenes.pq",
}
SHARE = 0.2
CONTEXT = ("image.context_probability=0.3", "image.context_pass=mean")
# The more-cameras recipe: both SMOKE5K sets as frames that only train, for twice fast.yaml's steps.
BOTH_SETS = ("training-scenes", "outside")
TWICE_THE_STEPS = ("training.epochs=6", "training.evaluation_epochs=6")
# The best fast recipe's overrides since the eighteenth session: two start-mined crops a frame at share 0.15.
RECIPE = (
    *TWICE_THE_STEPS,
    "dataset.negative_dataframe={hard_start_2}",
    "dataset.negative_share=0.15",
    "dataset.extra_in_validation_groups=validate",
)


@dataclass(frozen=True)
class Row:
    name: str
    overrides: tuple[str, ...] = ()
    item: str = ""  # the issue item the row measures
    config: Path = FAST
    # SMOKE5K real frames that only train (``smoke_pretrain_table.py --real`` choices).
    extra_frames: tuple[str, ...] = ()
    # The row's own start, an experiment folder under the repository root, instead of --init-from's: it
    # also mines the row's ``{hard_start*}`` crops (into folders named after it).
    start: str = ""


ROWS = [
    Row("fast.yaml", (), "baseline"),
    Row(
        "fast.yaml without the context pass",
        ("image.context_probability=0", "image.context_pass=none"),
        "5",
    ),
    Row(
        "classification head, frame score only (no veto)",
        ("architecture.classification_head=true",),
        "2",
    ),
    Row(
        "classification head, verdict needs head >= 0.5",
        ("architecture.classification_head=true", "prediction.classification_threshold=0.5"),
        "2",
    ),
    Row(
        "context pass: 30% whole-frame views, mean of both passes",
        CONTEXT,
        "5",
    ),
    Row(
        "hard negatives, share 0.2",
        ("dataset.negative_dataframe={hard}", f"dataset.negative_share={SHARE}"),
        "3",
    ),
    Row(
        "random smoke-free crops, share 0.2",
        ("dataset.negative_dataframe={random}", f"dataset.negative_share={SHARE}"),
        "3",
    ),
    Row(
        "context pass + random smoke-free crops 0.2",
        (*CONTEXT, "dataset.negative_dataframe={random}", f"dataset.negative_share={SHARE}"),
        "3+5",
    ),
    Row(
        "context pass + hard negatives 0.2",
        (*CONTEXT, "dataset.negative_dataframe={hard}", f"dataset.negative_share={SHARE}"),
        "3+5",
    ),
    Row(
        "context pass + random smoke-free crops 0.2, fp32 training and scoring",
        (
            *CONTEXT,
            "dataset.negative_dataframe={random}",
            f"dataset.negative_share={SHARE}",
            "environment.mixed_precision_training=false",
            "environment.mixed_precision_inference=false",
        ),
        "7",
    ),
    Row(
        "384x384 crops, batch 8",
        ("image.image_height=384", "image.image_width=384", "training.batch_size=8"),
        "5",
    ),
    Row("horizontal-flip TTA", ("prediction.test_time_augmentations=[horizontal_flip]",), "5"),
    Row("loss BCE + Lovasz", ("training.loss_function=BCELovasz",), "5"),
    Row("loss Focal + Dice", ("training.loss_function=FocalDice",), "5"),
    Row(
        "reference config (whole frames resized to 256x256), EfficientNet-Lite0",
        ("architecture.backbone=efficientnet_lite0", "training.build_scoring_pipelines=false"),
        "large plumes",
        SEED_CONFIG,
    ),
    Row(
        "+ SMOKE5K frames of other fires (the pretraining frames), same steps",
        ("training.epochs=5", "training.evaluation_epochs=5"),
        "cameras",
        extra_frames=("outside",),
    ),
    Row(
        "+ SMOKE5K frames of the training scenes, same steps",
        ("training.epochs=5", "training.evaluation_epochs=5"),
        "cameras",
        extra_frames=("training-scenes",),
    ),
    Row(
        "+ SMOKE5K frames of the training scenes and other fires, same steps",
        ("training.epochs=3", "training.evaluation_epochs=3"),
        "cameras",
        extra_frames=("training-scenes", "outside"),
    ),
    Row(
        "+ SMOKE5K frames of the training scenes and other fires, 2x steps",
        TWICE_THE_STEPS,
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(  # the same model as the row above; its validation (and tuning) adds the held-out SMOKE5K frames
        "+ SMOKE5K training scenes and other fires, 2x steps, wider validation",
        (*TWICE_THE_STEPS, "dataset.extra_in_validation_groups=validate"),
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(
        "+ SMOKE5K training scenes and other fires, 2x steps, hard negatives 0.2",
        (*TWICE_THE_STEPS, "dataset.negative_dataframe={hard}", f"dataset.negative_share={SHARE}"),
        "cameras+3",
        extra_frames=BOTH_SETS,
    ),
    Row(
        "+ SMOKE5K training scenes and other fires, 3x steps",
        ("training.epochs=9", "training.evaluation_epochs=9"),
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(  # as many epochs as fit 10 minutes in fp32 here (64 s each), between 2x and 3x steps
        "+ SMOKE5K training scenes and other fires, 7 epochs",
        ("training.epochs=7", "training.evaluation_epochs=7"),
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(
        "+ SMOKE5K training scenes and other fires, 2x steps, EMA 0.97",
        (*TWICE_THE_STEPS, "training.ema_decay=0.97"),
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(
        "+ SMOKE5K training scenes and other fires, 2x steps, lr 5e-4",
        (*TWICE_THE_STEPS, "training.learning_rate=0.0005"),
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(  # the learning rate the fourth session left out: steps are the budget, so larger ones might pay
        "+ SMOKE5K training scenes and other fires, 2x steps, lr 2e-3, wider validation",
        (*TWICE_THE_STEPS, "training.learning_rate=0.002", "dataset.extra_in_validation_groups=validate"),
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(  # inside 10 minutes in fp32 since training runs channels-last: its points on the wider validation
        "+ SMOKE5K training scenes and other fires, 3x steps, wider validation",
        ("training.epochs=9", "training.evaluation_epochs=9", "dataset.extra_in_validation_groups=validate"),
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(  # the false-alarm gallery's lens flare and sun glint: glare the training frames hold few of
        "+ SMOKE5K training scenes and other fires, 2x steps, sun flare 0.2, wider validation",
        (
            *TWICE_THE_STEPS,
            "augmentation.glare_probability=0.2",
            "dataset.extra_in_validation_groups=validate",
        ),
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(  # small plumes are the misses: Dice per crop weighs them as much as large ones
        "+ SMOKE5K training scenes and other fires, 2x steps, Dice per image, wider validation",
        (*TWICE_THE_STEPS, "training.dice_per_image=true", "dataset.extra_in_validation_groups=validate"),
        "5",
        extra_frames=BOTH_SETS,
    ),
    Row(  # item 5's larger crops on the best row, at its compute: 2.25x the pixels a crop, half the epochs
        "+ SMOKE5K training scenes and other fires, 384x384 crops, batch 8, 3 epochs, wider validation",
        (
            "training.epochs=3",
            "training.evaluation_epochs=3",
            "image.image_height=384",
            "image.image_width=384",
            "training.batch_size=8",
            "dataset.extra_in_validation_groups=validate",
        ),
        "5",
        extra_frames=BOTH_SETS,
    ),
    Row(  # run with --init-from a smoke-pretrained Lite2 (the two pretraining stages with this backbone)
        "+ SMOKE5K training scenes and other fires, 2x steps, EfficientNet-Lite2",
        (*TWICE_THE_STEPS, "architecture.backbone=efficientnet_lite2"),
        "4",
        extra_frames=BOTH_SETS,
    ),
    Row(  # the row above on the wider validation the Lite0 rows since the sixth session are chosen on
        "+ SMOKE5K training scenes and other fires, Lite2, 2x steps, wider validation",
        (
            *TWICE_THE_STEPS,
            "architecture.backbone=efficientnet_lite2",
            "dataset.extra_in_validation_groups=validate",
        ),
        "4",
        extra_frames=BOTH_SETS,
    ),
    Row(  # hard negatives inside the fast budget: mined by the smoke-pretrained start, no fast.yaml model
        "Hard negatives mined by the start, SMOKE5K training scenes and other fires, 2x steps, "
        "wider validation",
        (
            *TWICE_THE_STEPS,
            "dataset.negative_dataframe={hard_start}",
            f"dataset.negative_share={SHARE}",
            "dataset.extra_in_validation_groups=validate",
        ),
        "3",
        extra_frames=BOTH_SETS,
    ),
    Row(  # the row above cost mean per-image IoU: half the share, to keep it and some of the fewer alarms
        "Hard negatives mined by the start at share 0.1, SMOKE5K training scenes and other fires, 2x steps, "
        "wider validation",
        (
            *TWICE_THE_STEPS,
            "dataset.negative_dataframe={hard_start}",
            "dataset.negative_share=0.1",
            "dataset.extra_in_validation_groups=validate",
        ),
        "3",
        extra_frames=BOTH_SETS,
    ),
    Row(  # share 0.2 cut false regions but cost the best point: twice the distinct crops at share 0.1
        "Hard negatives mined by the start, 2 a frame, share 0.1, SMOKE5K training scenes and other fires, "
        "2x steps, wider validation",
        (
            *TWICE_THE_STEPS,
            "dataset.negative_dataframe={hard_start_2}",
            "dataset.negative_share=0.1",
            "dataset.extra_in_validation_groups=validate",
        ),
        "3",
        extra_frames=BOTH_SETS,
    ),
    Row(  # the best recipe since the eighteenth session: two a frame, at a larger share
        "Hard negatives mined by the start, 2 a frame, share 0.15, SMOKE5K training scenes and other fires, "
        "2x steps, wider validation",
        RECIPE,
        "3",
        extra_frames=BOTH_SETS,
    ),
    Row(  # discriminative fine-tuning: the smoke-pretrained encoder moves less than the decoder
        "Encoder at 0.1x the learning rate (1e-4), the recipe's negatives, SMOKE5K training scenes and "
        "other fires, 2x steps, wider validation",
        (
            *RECIPE,
            "training.differential_learning_rate_layers=[encoder]",
            "training.differential_learning_rate=0.0001",
        ),
        "3",
        extra_frames=BOTH_SETS,
    ),
    Row(
        "Encoder at 0.3x the learning rate (3e-4), the recipe's negatives, SMOKE5K training scenes and "
        "other fires, 2x steps, wider validation",
        (
            *RECIPE,
            "training.differential_learning_rate_layers=[encoder]",
            "training.differential_learning_rate=0.0003",
        ),
        "3",
        extra_frames=BOTH_SETS,
    ),
    Row(  # unseen cameras differ in colour and framing: stronger photometric and geometric augmentation
        "Medium augmentation, the recipe's negatives, SMOKE5K training scenes and other fires, 2x steps, "
        "wider validation",
        (*RECIPE, "augmentation.augmentations_strategy=Medium"),
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(  # Medium led at two points of three: one step further, with fog, blur, noise and JPEG
        "Hard augmentation, the recipe's negatives, SMOKE5K training scenes and other fires, 2x steps, "
        "wider validation",
        (*RECIPE, "augmentation.augmentations_strategy=Hard"),
        "cameras",
        extra_frames=BOTH_SETS,
    ),
    Row(  # share 0.1 -> 0.15 at two a frame cut false regions and kept the best point: one step further
        "Hard negatives mined by the start, 2 a frame, share 0.2, SMOKE5K training scenes and other fires, "
        "2x steps, wider validation",
        (
            *TWICE_THE_STEPS,
            "dataset.negative_dataframe={hard_start_2}",
            "dataset.negative_share=0.2",
            "dataset.extra_in_validation_groups=validate",
        ),
        "3",
        extra_frames=BOTH_SETS,
    ),
    Row(  # more distinct crops at the recipe's share: a third window of each frame the start gets wrong
        "Hard negatives mined by the start, 3 a frame, share 0.15, SMOKE5K training scenes and other fires, "
        "2x steps, wider validation",
        (
            *TWICE_THE_STEPS,
            "dataset.negative_dataframe={hard_start_3}",
            "dataset.negative_share=0.15",
            "dataset.extra_in_validation_groups=validate",
        ),
        "3",
        extra_frames=BOTH_SETS,
    ),
    Row(  # the recipe from a start that trained on negatives too (a third pretraining stage)
        "Start with a negatives stage, 2 a frame, share 0.15, SMOKE5K training scenes and other fires, "
        "2x steps, wider validation",
        RECIPE,
        "3",
        extra_frames=BOTH_SETS,
        start="output/smoke-pretrain-negatives",
    ),
    Row(  # the same, from the negatives stage at learning rate 3e-4
        "Start with a gentler negatives stage, 2 a frame, share 0.15, SMOKE5K training scenes and other "
        "fires, 2x steps, wider validation",
        RECIPE,
        "3",
        extra_frames=BOTH_SETS,
        start="output/smoke-pretrain-negatives-lr3e-4",
    ),
    Row(  # the recipe from a stronger pretraining: stage one goes on over all 4,000 synthetic images
        "Start with all 4,000 synthetic images in stage one, 2 a frame, share 0.15, SMOKE5K training "
        "scenes and other fires, 2x steps, wider validation",
        RECIPE,
        "3",
        extra_frames=BOTH_SETS,
        start="output/smoke-pretrain-all-real",
    ),
    Row(  # the two levers that each cut validation's false regions (Lite2; hard negatives), together
        "Lite2 + hard negatives 0.2, SMOKE5K training scenes and other fires, 2x steps, wider validation",
        (
            *TWICE_THE_STEPS,
            "architecture.backbone=efficientnet_lite2",
            "dataset.negative_dataframe={hard}",
            f"dataset.negative_share={SHARE}",
            "dataset.extra_in_validation_groups=validate",
        ),
        "3+4",
        extra_frames=BOTH_SETS,
    ),
    Row(
        "+ SMOKE5K training scenes and other fires, 2x steps, fp32",
        (
            *TWICE_THE_STEPS,
            "environment.mixed_precision_training=false",
            "environment.mixed_precision_inference=false",
        ),
        "7",
        extra_frames=BOTH_SETS,
    ),
    Row(  # the fast budget without bfloat16 units: the start-mined negatives row in fp32
        "fp32, hard negatives mined by the start at share 0.1, SMOKE5K training scenes and other fires, "
        "2x steps",
        (
            *TWICE_THE_STEPS,
            "dataset.negative_dataframe={hard_start}",
            "dataset.negative_share=0.1",
            "environment.mixed_precision_training=false",
            "environment.mixed_precision_inference=false",
        ),
        "7",
        extra_frames=BOTH_SETS,
    ),
    Row("60 epochs", ("training.epochs=60", "training.evaluation_epochs=60"), "7"),
    Row("EfficientNet-Lite1", ("architecture.backbone=efficientnet_lite1",), "4"),
    Row("EfficientNet-Lite2, context pass", ("architecture.backbone=efficientnet_lite2",), "4"),
    Row(
        "fp32 training and scoring",
        ("environment.mixed_precision_training=false", "environment.mixed_precision_inference=false"),
        "7",
    ),
]
# Tables mined by the ``--init-from`` model: placeholder suffix -> most crops cut from one frame.
START_MINING = {"_start": 1, "_start_2": 2, "_start_3": 3}
# Operating points chosen on grouped validation: name -> `smokeseg tune-threshold` options.
OPERATING_POINTS = {
    "best mean per-image IoU": ("--metric", "mean_image_IoU"),
    "region recall >= 0.9": ("--min-region-recall", "0.9"),
    "alarm budget 0.05": ("--alarm-budget", "0.05"),
    # The budget counted as the bar counts smoke-free crops: each window scored alone.
    "alarm budget 0.05, windows alone": ("--alarm-budget", "0.05", "--windows-alone"),
}
SCORES = (
    "IoU",
    "mean_image_IoU",
    "false_region_frames",
    "false_regions_per_frame",
    "region_recall",
    "image_AUROC",
)


def _folder_name(name: str) -> str:
    """A row's folder; the first 60 characters of its name, so row names must differ within them."""
    return "".join(c if c.isalnum() else "_" for c in name)[:60]


def test_by_size(fold: Path) -> dict[str, dict[str, float | int]]:
    """IoU by smoke size on the test frames, from the test predictions table."""
    table = pd.read_parquet(fold / TEST_PREDICTIONS_NAME).dropna(subset=["iou"])
    counts = table[["tp", "fp", "fn"]].to_numpy()
    fractions = (table["tp"] + table["fn"]) / (table["height"] * table["width"])
    return scores_by_size(counts, fractions.to_numpy())


def mine_negatives(
    miner: Path, folds_of: Path, workdir: Path, name: str = "", count_per_frame: int = 1, tag: str = ""
) -> dict[str, Path]:
    """Hard and random smoke-free crops, mined by ``miner`` from fold 0's training frames (the folds of
    the row in ``folds_of``) and the SMOKE5K frames outside smoke-ht's fires, at most ``count_per_frame``
    from a frame; returns each table's path under the placeholder ``hard{name}`` / ``random{name}``.
    ``tag`` ends the tables' folder names, so that crops of several miners can share a WORKDIR."""
    validation = set(pd.read_parquet(folds_of / "fold0" / VALIDATION_PREDICTIONS_NAME)["image_id"])
    train = pd.read_parquet(SMOKE_HT / "train.pq")
    fold_train = workdir / "fold0_train.pq"
    if not fold_train.is_file():
        train[~train["image_id"].isin(validation)].to_parquet(fold_train, index=False)
    sources = [str(fold_train), str(smoke5k_table(workdir, "outside"))]
    folders = [
        part
        for folder in (SMOKE_HT / "gt_training", SMOKE5K / "images")
        for part in ("--data-folder", str(folder))
    ]
    tables = {}
    count = ["--count-per-frame", str(count_per_frame)]
    for rule, flag in (("hard", count), ("random", ["--random", *count])):
        out = workdir / f"negatives-{rule}{name.replace('_', '-')}{tag}"
        if not out.is_dir():
            _timed(
                [SMOKESEG, "mine-negatives", str(miner), *sources, *folders, "-o", str(out), *flag], workdir
            )
        mined_by = json.loads((out / SUMMARY_NAME).read_text())["model"]
        if mined_by != str(miner.resolve()):  # named by count (and a Row.start), not by --init-from
            sys.exit(f"{out} was mined by {mined_by}, not {miner.resolve()}: give this start its own WORKDIR")
        tables[rule + name] = out / "negatives.csv"
    return tables


def smoke5k_table(workdir: Path, *parts: str) -> Path:
    """``smoke_pretrain_table.py --real PART ...``'s table, written once into ``workdir``."""
    table = workdir / SMOKE5K_TABLES.get(parts, "smoke5k-" + "-".join(parts) + ".pq")
    if not table.is_file():
        script = str(ROOT / "benchmarks/smoke_pretrain_table.py")
        _timed([sys.executable, script, str(table), "--real", *parts], workdir)
    return table


def extra_frames_overrides(workdir: Path, parts: tuple[str, ...]) -> list[str]:
    """Train on the SMOKE5K frames ``parts`` too (``dataset.extra_train_dataframe``): every fold's
    training gets them, minus those in a fire or scene of its validation frames; smoke-ht's folds stay
    as the first row has them."""
    table = smoke5k_table(workdir, *parts)
    return [f"dataset.extra_train_dataframe={table}", f"dataset.extra_data_folder={SMOKE5K / 'images'}"]


@dataclass(frozen=True)
class Judges:
    """What every row is scored on, loaded once: smoke-free camera crops (with their frames' sizes)
    and smoke-ht's test frames.

    Only the crops cut from frames of the test scenes count: a crop of a training scene's frame shows a
    camera that fine-tuning trains on (and rows with ``extra_frames`` train on that very frame)."""

    crops: list[Sample]
    frame_sizes: dict[str, tuple[int, int]]
    test_frames: list[Sample]
    test_scenes: TestScenes

    @classmethod
    def load(cls, crops: Path, workdir: Path) -> Judges:
        training_scenes = {
            Path(image_id).stem
            for image_id in pd.read_parquet(smoke5k_table(workdir, "training-scenes"))["image_id"]
        }
        listed = pd.read_csv(crops / TABLE_NAME)
        listed = listed[[name.rsplit("_", 1)[0] not in training_scenes for name in listed["image_id"]]]
        sizes = zip(listed["frame_height"], listed["frame_width"], strict=True)
        samples = load_samples(crops / TABLE_NAME, crops / "images", DatasetConfig(), require_masks=True)
        kept = set(listed["image_id"])
        print(f"{len(kept)} of {len(samples)} smoke-free crops are of test scenes' frames", flush=True)
        return cls(
            [sample for sample in samples if sample.image_id in kept],
            dict(zip(listed["image_id"], sizes, strict=True)),
            load_samples(SMOKE_HT / "test.pq", SMOKE_HT / "gt_testing", DatasetConfig(), require_masks=True),
            TestScenes.load(crops),
        )


def run_row(row: Row, workdir: Path, judges: Judges, placeholders: dict[str, object]) -> dict[str, object]:
    out = workdir / _folder_name(row.name)
    overrides = [o.format(**placeholders) for o in (*GROUPED, *row.overrides)]
    if row.extra_frames:
        overrides += extra_frames_overrides(workdir, row.extra_frames)
    if placeholders.get("init"):
        overrides.append(f"architecture.init_from={placeholders['init']}")
    sets = [part for override in overrides for part in ("--set", override)]
    arguments = ["train", str(row.config), *sets, "--output-dir", str(out), "--no-progress"]
    seconds = _timed([SMOKESEG, *arguments], workdir)
    metrics = json.loads((out / "fold0/metrics.json").read_text())
    alarms = score_model(str(out), judges.crops, judges.frame_sizes, judges.test_frames)
    command = "smokeseg " + " ".join(arguments[:-3]).replace(str(ROOT) + "/", "").replace(
        str(SHARED.parent) + "/", "../"
    )
    return {
        "row": row.name,
        "item": row.item,
        "command": command,
        "wall_s": round(seconds, 1),
        "training_s": metrics.get("training_time_s"),  # the wall without the start-up and final scoring
        "validation": {name: metrics.get(f"validation_{name}") for name in SCORES},
        "test": {name: metrics.get(f"test_{name}") for name in SCORES},
        "test_by_size": test_by_size(out / "fold0"),
        "smoke_free_crops": alarms["operating_point"],
        "smoke_free_crops_best_at_equal_recall": alarms["lowest_false_positive_rate_at_equal_recall"],
        "frame_score_AUROC": alarms["frame_score_AUROC"],
        "frame_score_reliability": alarms["frame_score_reliability"],
    }


def operating_points(row: dict[str, Any], workdir: Path, judges: Judges) -> dict[str, object]:
    """The row's model at each of ``OPERATING_POINTS`` it lacks: the threshold tuned on fold 0's validation
    frames (in a copy of the fold, so the row's own model keeps its threshold), then test and crop scores
    there: the copies differ only in their threshold, so the test frames and the crops are scored once."""
    fold = workdir / _folder_name(str(row["row"])) / "fold0"
    points = dict(row.get("operating_points", {}))
    validation: dict[str, dict[str, Any]] = {}
    for name, options in OPERATING_POINTS.items():
        if name in points:
            continue
        tuned = fold.with_name(f"fold0-{_folder_name(name)}")
        shutil.rmtree(tuned, ignore_errors=True)
        shutil.copytree(fold, tuned)
        (tuned / THRESHOLD_NAME).unlink(missing_ok=True)
        _timed([SMOKESEG, "tune-threshold", str(tuned), *options], workdir)
        validation[name] = json.loads((tuned / THRESHOLD_NAME).read_text())
    if not validation:
        return points
    thresholds = {name: stored["probability_threshold"] for name, stored in validation.items()}
    predictor = Predictor.from_path(tuned, "auto")  # any copy: their scoring keys are the fold's
    tests = evaluate_at_thresholds(
        predictor, judges.test_frames, thresholds, model=str(fold), data=str(SMOKE_HT / "test.pq")
    )
    alarms = alarms_at_thresholds(predictor, judges.crops, judges.frame_sizes, judges.test_frames, thresholds)
    for name, test in tests.items():
        segmentation, detection = test.segmentation(), test.detection()
        points[name] = {
            "threshold": thresholds[name],
            "validation": validation[name],
            "test": {
                "IoU": segmentation["IoU"],
                "mean_image_IoU": segmentation["mean_image_IoU"],
                "false_region_frames": detection["false_region_frames"],
                "region_recall": detection["region_recall"],
            },
            "test_by_size": test.by_size(),
            "smoke_free_crops": alarms[name],
        }
    return points


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workdir", type=Path)
    parser.add_argument("crops", type=Path, help="smoke-free crops folder written by false_alarms.py")
    parser.add_argument(
        "--rows", nargs="*", help="names of the rows to run and put at operating points (all by default)"
    )
    parser.add_argument(
        "--init-from", type=Path, help="a smoke-pretrained experiment folder to start every row from"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip-test-scenes",
        action="store_true",
        help="leave out the 631 frames of the test scenes (about 20 minutes a model on 2 cores)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results-items.json")
    args = parser.parse_args()
    if len({_folder_name(row.name) for row in ROWS}) < len(ROWS):
        sys.exit("two rows share a folder: make their names differ in the first 60 characters")
    if not (args.crops / TABLE_NAME).is_file():
        sys.exit(
            f"{args.crops / TABLE_NAME} is missing: run benchmarks/false_alarms.py {args.crops} MODEL first"
        )
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = args.workdir.resolve()
    machine = cpu_description()
    print(json.dumps(machine, indent=1), flush=True)
    done = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    placeholders: dict[str, object] = {
        "init": args.init_from.resolve() if args.init_from else None,
        "seed": args.seed,
    }
    judges = Judges.load(args.crops.resolve(), workdir)
    first_row = workdir / _folder_name(ROWS[0].name)  # whose fold 0 every row shares
    for row in ROWS:
        if (args.rows and row.name not in args.rows) or any(r["row"] == row.name for r in done):
            continue
        overrides = "".join(row.overrides)
        mines = "{hard" in overrides or "{random" in overrides
        if mines and not (first_row / "fold0").is_dir():  # mining takes its training frames from it
            done.append(run_row(ROWS[0], workdir, judges, placeholders))  # judged only when in --rows
            write_text_atomic(args.out, json.dumps({"machine": machine, "rows": done}, indent=1) + "\n")
        if "{hard}" in overrides or "{random}" in overrides:
            placeholders.update(mine_negatives(first_row, first_row, workdir))
        start = (ROOT / row.start).resolve() if row.start else placeholders["init"]
        row_placeholders = {**placeholders, "init": start}
        for name, count_per_frame in START_MINING.items():
            if name + "}" not in overrides:
                continue
            if not isinstance(start, Path):
                sys.exit(f"row {row.name!r} mines with the start model: give --init-from")
            tag = "-" + Path(row.start).name if row.start else ""
            row_placeholders.update(mine_negatives(start, first_row, workdir, name, count_per_frame, tag))
        started = time.perf_counter()
        done.append(run_row(row, workdir, judges, row_placeholders))
        print(json.dumps(done[-1], indent=1), f"({time.perf_counter() - started:.0f} s)", flush=True)
        write_text_atomic(args.out, json.dumps({"machine": machine, "rows": done}, indent=1) + "\n")
    for row in done:
        if args.rows and row["row"] not in args.rows:
            continue
        fold = workdir / _folder_name(str(row["row"])) / "fold0"
        if not fold.is_dir():
            continue
        if set(OPERATING_POINTS) - set(row.get("operating_points", {})):
            row["operating_points"] = operating_points(row, workdir, judges)
            write_text_atomic(args.out, json.dumps({"machine": machine, "rows": done}, indent=1) + "\n")
        if args.skip_test_scenes:
            continue
        scored = row.get("test_scenes", {}).get("points", {})
        missing = {n: p["threshold"] for n, p in row["operating_points"].items() if n not in scored}
        if missing:
            scenes = score_test_scenes(fold, missing, judges.test_scenes)
            row["test_scenes"] = {**scenes, "points": {**scored, **scenes["points"]}}
            write_text_atomic(args.out, json.dumps({"machine": machine, "rows": done}, indent=1) + "\n")
    print(_table(done))
    print(_operating_table(done))


COLUMNS = (
    "row",
    "item",
    "val IoU",
    "val IoU/img",
    "val false-region frames",
    "test IoU",
    "test IoU/img",
    "test IoU small / medium / large",
    "test false-region frames",
    "test region recall",
    "smoke-free crops alarm",
    "wall",
)


def _number(value: object) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        v, t, s = r["validation"], r["test"], r["test_by_size"]
        cells = [
            r["row"],
            r["item"],
            _number(v["IoU"]),
            _number(v["mean_image_IoU"]),
            _number(v["false_region_frames"]),
            _number(t["IoU"]),
            _number(t["mean_image_IoU"]),
            " / ".join(_number(s.get(k, {}).get("IoU")) for k in ("small", "medium", "large")),
            _number(t["false_region_frames"]),
            _number(t["region_recall"]),
            _number(r["smoke_free_crops"]["false_positive_rate"]),
            f"{r['wall_s']:.0f} s" + (f" ({r['training_s']:.0f} s training)" if r.get("training_s") else ""),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


OPERATING_COLUMNS = (
    "row",
    "operating point",
    "threshold",
    "val region recall",
    "val false-region frames",
    "val alarming windows",
    "test IoU",
    "test IoU/img",
    "test IoU large",
    "test false-region frames",
    "test region recall",
    "smoke-free crops alarm",
)


def _operating_table(rows: list[dict]) -> str:
    """Each row at its operating points (``operating_points``) as a Markdown table."""
    lines = ["| " + " | ".join(OPERATING_COLUMNS) + " |", "|" + "---|" * len(OPERATING_COLUMNS)]
    for r in rows:
        for name, point in r.get("operating_points", {}).items():
            v, t = point["validation"], point["test"]
            cells = [
                r["row"],
                name,
                _number(point["threshold"]),
                _number(v.get("region_recall")),
                _number(v.get("false_region_frames")),
                _number(v.get("window_alarm")),
                _number(t["IoU"]),
                _number(t["mean_image_IoU"]),
                _number(point["test_by_size"].get("large", {}).get("IoU")),
                _number(t["false_region_frames"]),
                _number(t["region_recall"]),
                _number(point["smoke_free_crops"]["false_positive_rate"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
