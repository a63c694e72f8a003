"""Hydrogen Torch config: every seed key understood, defaults equal the seed, mistakes explained."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from smokeseg.config.load import PATH_KEYS, config_to_yaml, load_config
from smokeseg.config.schema import DatasetConfig, ExperimentConfig
from smokeseg.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared"
SEED_CONFIG = SHARED / "datasets/smoke-ht/smoke_segmentation.yaml"
needs_seed = pytest.mark.skipif(not SEED_CONFIG.is_file(), reason=f"seed config not found at {SEED_CONFIG}")


def _as_written(value):
    return None if value == "None" else value


@needs_seed
def test_seed_config_loads_with_every_value_as_written():
    raw = yaml.safe_load(SEED_CONFIG.read_text())
    config = load_config(SEED_CONFIG).model_dump()
    for section, values in raw.items():
        if not isinstance(values, dict):
            assert config[section] == values
            continue
        for key, value in values.items():
            loaded = config[section][key]
            if key in PATH_KEYS and value != "None":
                assert loaded == (SEED_CONFIG.parent / value).resolve(), key
            elif key in {"augmentations_strategy", "logger"}:
                assert loaded == value, key
            else:
                assert loaded == _as_written(value), f"{section}.{key}"


@needs_seed
def test_defaults_equal_the_seed_config_values():
    raw = yaml.safe_load(SEED_CONFIG.read_text())
    defaults = ExperimentConfig().model_dump()
    for section, values in raw.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if key in PATH_KEYS:
                continue
            default = defaults[section][key]
            expected = value if key in {"augmentations_strategy", "logger"} else _as_written(value)
            assert default == expected, f"{section}.{key}: default {default!r} != seed {value!r}"


def test_config_with_only_dataset_paths_is_complete(tmp_path: Path):
    path = tmp_path / "exp.yaml"
    path.write_text("dataset:\n  train_dataframe: data/train.pq\n  data_folder: data/images\n")
    config = load_config(path)
    assert config.dataset.train_dataframe == (tmp_path / "data/train.pq").resolve()
    assert config.architecture.architecture == "Unet"
    assert config.training.loss_function == "BCEDice"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg/exp.yaml"
    path.write_text("dataset:\n  train_dataframe: ../t.pq\n  test_dataframe: None\n")
    monkeypatch.chdir("/")
    config = load_config(path)
    assert config.dataset.train_dataframe == (tmp_path / "t.pq").resolve()
    assert config.dataset.test_dataframe is None


def test_newer_hydrogen_torch_keys_and_aliases():
    config = ExperimentConfig.model_validate(
        {
            "training": {
                "bce_weight": 2,
                "dice_weight": 0.5,
                "focal_weight": 0,
                "lovasz_weight": 1,
                "evaluate_before_training": True,
            },
            "dataset": {"selected_folds": [0, 1]},
            "prediction": {"batch_size_inference": 4},
            "environment": {"number_of_gpus_per_run": 1},
        }
    )
    assert config.dataset.folds == ["0", "1"]
    assert config.training.bce_weight == 2
    assert config.prediction.batch_size_inference == 4


def test_overrides_parse_values_as_yaml(tmp_path: Path):
    config = load_config(
        None,
        [
            "training.epochs=10",
            "architecture.backbone=resnet50",
            "training.drop_last_batch=false",
            "dataset.folds=[0, 2]",
            "dataset.validation_dataframe=None",
        ],
        base_dir=tmp_path,
    )
    assert config.training.epochs == 10
    assert config.architecture.backbone == "resnet50"
    assert config.training.drop_last_batch is False
    assert config.dataset.folds == ["0", "2"]
    assert config.dataset.validation_dataframe is None


def test_set_paths_resolve_against_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    recipes, work = tmp_path / "recipes", tmp_path / "work"
    recipes.mkdir()
    work.mkdir()
    path = recipes / "exp.yaml"
    path.write_text("dataset:\n  train_dataframe: train.pq\n  data_folder: images\n")
    monkeypatch.chdir(work)
    config = load_config(
        path,
        ["architecture.init_from=runs/pretrain", "dataset.data_folder=frames", "dataset.test_dataframe=None"],
    )
    assert config.dataset.train_dataframe == (recipes / "train.pq").resolve()  # written in the file
    assert config.dataset.data_folder == (work / "frames").resolve()  # typed on the command line
    assert config.architecture.init_from == (work / "runs/pretrain").resolve()
    assert config.dataset.test_dataframe is None


def test_unknown_key_names_section_and_closest_key():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["training.epoch=3"])
    message = str(error.value)
    assert "'epoch'" in message and "'training'" in message and "training.epochs" in message


def test_an_unrelated_unknown_key_gets_no_suggestion():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["training.frobnicate=3"])
    assert "unknown key 'frobnicate'" in str(error.value) and "Did you mean" not in str(error.value)


def test_unknown_section_is_named():
    with pytest.raises(ConfigError, match=r"unknown key 'trainng'.*Did you mean 'training'"):
        load_config(None, ["trainng.epochs=3"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.optimizer=Adamm", r"training.optimizer = 'Adamm'.*'AdamW', 'Adam', 'SGD' or 'RMSprop'"),
        ("training.epochs=0", r"training.epochs = 0.*greater than or equal to 1"),
        ("image.image_height=250", r"image.image_height = 250.*divisible by 32.*224 or 256"),
        ("prediction.probability_threshold=1.5", r"probability_threshold = 1.5.*less than or equal to 1"),
        ("dataset.validation_strategy=random", r"validation_strategy = 'random'.*'kfold', 'custom' or"),
    ],
)
def test_wrong_value_names_key_value_and_what_is_allowed(override: str, expected: str):
    with pytest.raises(ConfigError, match=expected):
        load_config(None, [override])


def test_bad_override_syntax_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load_config(None, ["training.epochs"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("training: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml is not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_effective_config_round_trips(tmp_path: Path):
    config = load_config(None, ["training.epochs=7", "dataset.train_dataframe=/data/t.pq"])
    saved = tmp_path / "config.yaml"
    saved.write_text(config_to_yaml(config))
    assert load_config(saved) == config
    assert "validation_dataframe: None" in saved.read_text()


def test_run_tables_name_each_table_with_its_folder_and_settings():
    dataset = DatasetConfig(
        train_dataframe=Path("train.pq"),
        data_folder=Path("site"),
        validation_strategy="custom",
        validation_dataframe=Path("validation.pq"),
        extra_train_dataframe=Path("extra.pq"),
        extra_data_folder=Path("smoke5k"),
        test_dataframe=Path("test.pq"),
        data_folder_test=Path("site_test"),
        rle_order="F",
        test_rle_order="C",
    )
    tables = {table.name: table for table in dataset.run_tables()}
    assert list(tables) == ["train", "validation", "extra", "test"]
    assert {name: (t.table.stem, t.data_folder.name) for name, t in tables.items()} == {
        "train": ("train", "site"),
        "validation": ("validation", "site"),
        "extra": ("extra", "smoke5k"),
        "test": ("test", "site_test"),
    }
    assert [t.labelled for t in tables.values()] == [True, True, True, False], (
        "a test table may be unlabelled"
    )
    assert tables["test"].settings.rle_order == "C" and tables["train"].settings.rle_order == "F"
    assert tables["test"].rle_order_setting == "dataset.test_rle_order"
    assert tables["extra"].rle_order_setting == "dataset.rle_order"
    # kfold reads no validation table; unset tables are left out; folders fall back to data_folder
    plain = DatasetConfig(train_dataframe=Path("train.pq"), test_dataframe=Path("test.pq"))
    assert [(t.name, t.data_folder) for t in plain.run_tables()] == [
        ("train", Path(".")),
        ("test", Path(".")),
    ]
