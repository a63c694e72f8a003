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


def _plumes(missed_small: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 32x32 images: a 400-pixel plume and a 4-pixel one; the model finds one of them and misses
    the other (logits +-20)."""
    targets = torch.zeros(2, 1, 32, 32)
    targets[0, 0, :20, :20] = 1
    targets[1, 0, :2, :2] = 1
    logits = torch.where(targets > 0, 20.0, -20.0)
    logits[1 if missed_small else 0] = -20.0
    return logits, targets


def test_dice_per_image_weighs_a_small_plume_as_much_as_a_large_one() -> None:
    per_image = create_loss(TrainingConfig(loss_function="Dice", dice_per_image=True))
    batch = create_loss(TrainingConfig(loss_function="Dice"))
    small_missed, large_missed = _plumes(missed_small=True), _plumes(missed_small=False)
    # Each image's Dice is 1 (found) or 0 (missed): the mean loss is 0.5 whichever plume is missed.
    assert per_image(*small_missed).item() == pytest.approx(0.5, abs=1e-4)
    assert per_image(*large_missed).item() == pytest.approx(0.5, abs=1e-4)
    # One Dice over the batch's pixels barely notices the small plume missed.
    assert batch(*small_missed).item() == pytest.approx(1 - 2 * 400 / (400 + 404), abs=1e-3)
    assert batch(*large_missed).item() == pytest.approx(1 - 2 * 4 / (4 + 404), abs=1e-3)


def test_dice_per_image_leaves_smoke_free_images_to_the_other_parts() -> None:
    loss = create_loss(TrainingConfig(loss_function="Dice", dice_per_image=True))
    logits, targets = _plumes(missed_small=True)
    smoke_free = torch.zeros(1, 1, 32, 32)
    with_empty = loss(
        torch.cat([logits, torch.full_like(smoke_free, 10.0)]), torch.cat([targets, smoke_free])
    )
    assert with_empty.item() == pytest.approx(loss(logits, targets).item())
    empty_logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    nothing = loss(empty_logits, torch.zeros(2, 1, 8, 8))
    nothing.backward()
    assert nothing.item() == 0 and empty_logits.grad is not None and not empty_logits.grad.any()


def test_dice_per_image_takes_soft_targets_and_half_precision() -> None:
    logits, targets = _batch(soft=True)
    loss = create_loss(TrainingConfig(loss_function="BCEDice", dice_per_image=True))
    value = loss(logits.to(torch.bfloat16), targets)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
