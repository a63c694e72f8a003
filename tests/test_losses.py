import pytest
import torch
import torch.nn.functional as F

from smokeseg.config.schema import TrainingConfig
from smokeseg.errors import ConfigError
from smokeseg.model.losses import LOSS_PARTS, check_loss_name, create_loss, parse_loss_name


def _batch(soft: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 16, 16, generator=generator, requires_grad=True)
    targets = torch.rand(2, 1, 16, 16, generator=generator)
    return logits, targets if soft else (targets > 0.5).float()


@pytest.mark.parametrize(
    "name",
    ["BCE", "Dice", "Focal", "Lovasz", "BCEDice", "BCELovasz", "DiceLovasz", "FocalDice", "BCEDiceLovasz"],
)
def test_each_loss_is_a_finite_scalar_with_gradients(name: str) -> None:
    logits, targets = _batch()
    loss = create_loss(TrainingConfig(loss_function=name))(logits, targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("BCEDice", ["BCE", "Dice"]),
        ("bcedice", ["BCE", "Dice"]),
        ("DiceBCE", ["Dice", "BCE"]),
        (" BCEDiceLovasz ", ["BCE", "Dice", "Lovasz"]),
        ("FOCAL", ["Focal"]),
    ],
)
def test_names_split_into_parts_in_any_case_and_order(name: str, parts: list[str]) -> None:
    assert parse_loss_name(name) == parts
    check_loss_name(name)


@pytest.mark.parametrize("name", ["BCEDise", "CrossEntropy", "BCEBCE", "", "BCE+Dice"])
def test_unknown_names_list_the_valid_ones(name: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_loss_name(name)
    assert "BCE" in str(error.value) and "Dice" in str(error.value)


def test_a_misspelt_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'BCEDice'"):
        parse_loss_name("BCEDise")


def test_a_zero_weight_removes_its_part() -> None:
    logits, targets = _batch()
    bce_dice = create_loss(TrainingConfig(loss_function="BCEDice", dice_weight=0))
    bce = create_loss(TrainingConfig(loss_function="BCE"))
    assert list(bce_dice.parts) == ["BCE"]
    assert torch.equal(bce_dice(logits, targets), bce(logits, targets))


def test_weights_scale_their_parts() -> None:
    logits, targets = _batch()
    loss = create_loss(TrainingConfig(loss_function="BCEDiceLovasz", bce_weight=2, dice_weight=0.5))
    parts = loss.components(logits, targets)
    assert set(parts) == {"BCE", "Dice", "Lovasz"}
    expected = 2 * parts["BCE"] + 0.5 * parts["Dice"] + parts["Lovasz"]
    assert torch.allclose(loss(logits, targets), expected)


def test_all_weights_zero_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="dice_weight"):
        create_loss(TrainingConfig(loss_function="BCEDice", bce_weight=0, dice_weight=0))


def test_soft_targets_give_plain_bce_and_its_minimum_at_the_target() -> None:
    logits, targets = _batch(soft=True)
    loss = create_loss(TrainingConfig(loss_function="BCE"))
    assert torch.allclose(loss(logits, targets), F.binary_cross_entropy_with_logits(logits, targets))
    at_target = torch.logit(targets).requires_grad_()
    loss(at_target, targets).backward()
    assert at_target.grad.abs().max() < 1e-6


@pytest.mark.parametrize("name", list(LOSS_PARTS))
def test_soft_targets_work_for_every_part(name: str) -> None:
    logits, targets = _batch(soft=True)
    assert torch.isfinite(create_loss(TrainingConfig(loss_function=name))(logits, targets))


def test_half_precision_logits_are_computed_in_float32() -> None:
    logits, targets = _batch()
    loss = create_loss(TrainingConfig(loss_function="BCEDice"))
    half = loss(logits.detach().half(), targets.half())
    assert half.dtype == torch.float32
    assert torch.allclose(half, loss(logits.detach().half().float(), targets))
