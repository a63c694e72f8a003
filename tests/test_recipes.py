"""Every recipe is a valid experiment config, and its data paths resolve to the shared datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from smokeseg.config.load import load_config
from smokeseg.training.run import validate_before_training

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_loads_and_passes_the_early_checks(recipe: Path):
    config = load_config(recipe)
    validate_before_training(config)
    assert config.experiment_name == recipe.stem


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared datasets not found at {SHARED}")
@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.stem != "smoke-pretrain"], ids=lambda r: r.stem)
def test_recipe_data_is_found(recipe: Path):
    dataset = load_config(recipe).dataset
    for path in (dataset.train_dataframe, dataset.test_dataframe, dataset.data_folder):
        assert path.exists(), path
