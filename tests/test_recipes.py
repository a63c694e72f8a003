"""Every recipe is a valid experiment config, and its data paths resolve to the shared datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from smokeseg.config.load import load_config
from smokeseg.errors import ConfigError
from smokeseg.training.run import validate_before_training

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_loads_and_passes_the_early_checks(recipe: Path, tmp_path: Path):
    # Relative paths resolve into an empty folder, as in a fresh checkout that has trained nothing yet.
    config = load_config(recipe, base_dir=tmp_path)
    if config.architecture.init_from is not None:
        # A later stage starts from an earlier recipe's output: without it, the early check says so.
        with pytest.raises(ConfigError, match=r"init_from=.* does not exist: train that experiment first"):
            validate_before_training(config)
        architecture = config.architecture.model_copy(update={"init_from": None})
        config = config.model_copy(update={"architecture": architecture})
    validate_before_training(config)
    assert config.experiment_name == recipe.stem


# The smoke-pretraining tables are written by benchmarks/smoke_pretrain_table.py, not shipped.
WITH_SHIPPED_DATA = [r for r in RECIPES if not r.stem.startswith("smoke-pretrain")]


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared datasets not found at {SHARED}")
@pytest.mark.parametrize("recipe", WITH_SHIPPED_DATA, ids=lambda r: r.stem)
def test_recipe_data_is_found(recipe: Path):
    dataset = load_config(recipe).dataset
    for path in (dataset.train_dataframe, dataset.test_dataframe, dataset.data_folder):
        assert path.exists(), path
