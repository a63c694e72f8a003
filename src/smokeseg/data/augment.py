"""Augmentations as data: preset pipelines, Hydrogen Torch custom pipelines, and batch mixing.

Every pipeline is an albumentations ``Compose`` ending in a ``Resize`` to the model size, so it can be
written with ``A.to_dict`` next to a model and read back with ``A.from_dict``.

Presets for outdoor smoke. Smoke rises, so nothing flips vertically or rotates far; it is grey, hazy
and low in contrast, so colour jitter stays small enough that a plume still looks like a plume.

========  ====================================================================================
preset    training transforms (then ``Resize``)
========  ====================================================================================
None      nothing
Soft      horizontal flip; affine (shift 5%, scale 0.9-1.1, rotate 5 deg); brightness/contrast 0.1
Medium    Soft, wider affine (shift 10%, scale 0.85-1.2, rotate 10 deg), brightness/contrast
          0.2, hue/saturation/value (5/15/10), gamma 0.8-1.2
Hard      Medium, plus fog (p 0.1), Gaussian blur (p 0.1), Gaussian noise (p 0.2), JPEG
          recompression at quality 50-95 (p 0.3): the haze and cheap cameras of real sites
========  ====================================================================================

``augmentation.glare_probability`` adds a sun flare to any preset, the mask unchanged: glare is not smoke.
"""

from __future__ import annotations

import inspect
import json
import re
import warnings
from collections.abc import Callable
from typing import Any, cast

import albumentations as A
import cv2
import numpy as np
import torch

from smokeseg.config.schema import AugmentationConfig, ImageConfig
from smokeseg.errors import ConfigError

TRAIN_KEY = "augmentation.custom_train_augmentations"
INFERENCE_KEY = "augmentation.custom_inference_augmentations"

# Reflect at the borders: black wedges after a shift or rotation look like nothing in a real scene.
_BORDER = cv2.BORDER_REFLECT_101


def _soft() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(
            translate_percent=(-0.05, 0.05), scale=(0.9, 1.1), rotate=(-5, 5), border_mode=_BORDER, p=0.5
        ),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ]


def _medium() -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.Affine(
            translate_percent=(-0.1, 0.1), scale=(0.85, 1.2), rotate=(-10, 10), border_mode=_BORDER, p=0.7
        ),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=15, val_shift_limit=10, p=0.5),
        A.RandomGamma(gamma_limit=(80, 120), p=0.3),
    ]


def _hard() -> list[A.BasicTransform]:
    return [
        *_medium(),
        A.RandomFog(fog_coef_range=(0.1, 0.3), alpha_coef=0.08, p=0.1),
        A.GaussianBlur(blur_limit=(3, 5), p=0.1),
        A.GaussNoise(std_range=(0.02, 0.06), p=0.2),
        A.ImageCompression(quality_range=(50, 95), p=0.3),
    ]


# Factories, not lists: transforms carry random state, so every pipeline gets fresh instances.
PRESETS: dict[str, Callable[[], list[A.BasicTransform]]] = {
    "None": list,
    "Soft": _soft,
    "Medium": _medium,
    "Hard": _hard,
}


def model_resize(image_cfg: ImageConfig, p: float = 1.0) -> A.Resize:
    """Resize to the model input; area averaging when shrinking keeps thin, faint smoke visible."""
    return A.Resize(image_cfg.image_height, image_cfg.image_width, area_for_downscale="image", p=p)


def build_context_transform(image_cfg: ImageConfig) -> A.Compose | None:
    """native with ``context_pass``: the whole-frame view scored beside the native pass, the view that
    ``context_probability`` trains on; None without a context pass."""
    if image_cfg.context_pass == "none":
        return None
    return A.Compose([model_resize(image_cfg)])


def build_train_transform(
    aug_cfg: AugmentationConfig, image_cfg: ImageConfig, seed: int | None = None
) -> A.Compose:
    """The training pipeline: a preset, or the custom Hydrogen Torch pipeline for ``Custom``.

    ``seed`` makes the augmentation stream reproducible. DataLoader workers inherit the same state, so
    give each worker its own stream with ``transform.set_random_seed(seed + worker_id)``.
    """
    if aug_cfg.augmentations_strategy == "Custom":
        if aug_cfg.glare_probability > 0:
            raise ConfigError(
                f"augmentation.glare_probability adds a sun flare to the presets, but {TRAIN_KEY} replaces "
                "them: put an A.RandomSunFlare into that pipeline, or set augmentation.glare_probability: 0."
            )
        if image_cfg.context_probability > 0:
            raise ConfigError(
                f"image.context_probability shapes the preset native crops, but {TRAIN_KEY} replaces them: "
                "put the whole-frame Resize into that pipeline (an A.OneOf beside its crop), or set "
                "image.context_probability: 0."
            )
        pipeline = _ending_at_model_size(
            load_hydrogen_torch_pipeline(
                aug_cfg.custom_train_augmentations, image_cfg.image_height, image_cfg.image_width, TRAIN_KEY
            ),
            image_cfg,
        )
    elif image_cfg.resolution == "native":
        preset = PRESETS[aug_cfg.augmentations_strategy]()
        pipeline = A.Compose([*native_crop(image_cfg), *preset, *sun_flare(aug_cfg, image_cfg)])
    else:
        preset = PRESETS[aug_cfg.augmentations_strategy]()
        pipeline = A.Compose([*preset, model_resize(image_cfg), *sun_flare(aug_cfg, image_cfg)])
    pipeline.set_random_seed(seed)
    return pipeline


def sun_flare(aug_cfg: AugmentationConfig, image_cfg: ImageConfig) -> list[A.BasicTransform]:
    """A sun flare on ``glare_probability`` of the model-size samples, mask unchanged.

    The false regions left on unseen cameras are lens flare, sun glint and bright cloud edges, which the
    training frames hold few of; a flare drawn anywhere in the sample (a quarter of its side across)
    shows the model bright glare that is not smoke. Nothing when the share is 0.
    """
    if not aug_cfg.glare_probability:
        return []  # no extra random draw: seeded runs repeat those made before this option
    radius = max(image_cfg.image_height, image_cfg.image_width) // 4
    flare = A.RandomSunFlare(
        flare_roi=(0, 0, 1, 1),
        src_radius=radius,
        num_flare_circles_range=(3, 7),
        method="physics_based",
        p=aug_cfg.glare_probability,
    )
    return [flare]


def native_crop(image_cfg: ImageConfig) -> list[A.BasicTransform]:
    """Model-size crops at the image's own resolution, a share of them placed on smoke, and a share
    (``context_probability``) of whole frames resized to the model size instead.

    Crops on smoke teach what a plume looks like at full detail; random crops bring the clouds, haze
    and skylines a camera sees most of the time; whole frames show large plumes whole, as the context
    pass scores them.
    """
    height, width = image_cfg.image_height, image_cfg.image_width
    on_smoke = image_cfg.smoke_crop_probability
    context = image_cfg.context_probability
    crops = [
        A.PadIfNeeded(min_height=height, min_width=width, border_mode=_BORDER),
        A.OneOf(
            [
                A.CropNonEmptyMaskIfExists(height, width, p=on_smoke),
                A.RandomCrop(height, width, p=1 - on_smoke),
            ],
            p=1.0,
        ),
    ]
    if not context:
        return crops  # no extra random draw: seeded runs repeat those made before the context view
    # Padding belongs to the crops only: the context view resizes the frame as scoring does, unpadded.
    return [A.OneOf([A.Sequential(crops, p=1 - context), model_resize(image_cfg, p=context)], p=1.0)]


def pad_to_stride(stride: int = 32) -> A.PadIfNeeded:
    """Whole frames at native resolution: pad bottom and right to what the encoder's strides divide."""
    return A.PadIfNeeded(
        min_height=None,
        min_width=None,
        pad_height_divisor=stride,
        pad_width_divisor=stride,
        position="top_left",
        border_mode=_BORDER,
    )


def build_inference_transform(aug_cfg: AugmentationConfig, image_cfg: ImageConfig) -> A.Compose:
    """Validation, test and prediction: resize only, or the custom inference pipeline for ``Custom``."""
    if aug_cfg.augmentations_strategy == "Custom":
        return _ending_at_model_size(
            load_hydrogen_torch_pipeline(
                aug_cfg.custom_inference_augmentations,
                image_cfg.image_height,
                image_cfg.image_width,
                INFERENCE_KEY,
            ),
            image_cfg,
        )
    if image_cfg.resolution == "native":
        return A.Compose([pad_to_stride()])
    return A.Compose([model_resize(image_cfg)])


def _ending_at_model_size(pipeline: A.Compose, image_cfg: ImageConfig) -> A.Compose:
    """Append a resize unless the pipeline already ends in one: batches need one size."""
    last = pipeline.transforms[-1] if pipeline.transforms else None
    size = (image_cfg.image_height, image_cfg.image_width)
    if isinstance(last, A.Resize) and (last.height, last.width) == size:
        return pipeline
    return A.Compose([pipeline, model_resize(image_cfg)])


# Hydrogen Torch stores pipelines written by albumentations 1.x. What 2.x renamed, as data:
_RENAMED_TRANSFORMS = {"JpegCompression": "ImageCompression"}
_RENAMED_ARGS = {
    "value": "fill",
    "cval": "fill",
    "fill_value": "fill",
    "mask_value": "fill_mask",
    "cval_mask": "fill_mask",
    "mode": "border_mode",
}
_MERGED_ARGS = {  # (lower, upper) -> range
    ("quality_lower", "quality_upper"): "quality_range",
    ("fog_coef_lower", "fog_coef_upper"): "fog_coef_range",
    ("scale_min", "scale_max"): "scale_range",
    ("num_shadows_lower", "num_shadows_upper"): "num_shadows_limit",
    ("snow_point_lower", "snow_point_upper"): "snow_point_range",
}
_COMPOSE_CLASSES = {"Compose", "OneOf", "SomeOf", "Sequential", "OneOrOther", "SelectiveChannelTransform"}


def load_hydrogen_torch_pipeline(text: str, height: int, width: int, key: str = TRAIN_KEY) -> A.Compose:
    """Load a Hydrogen Torch serialised pipeline into today's albumentations.

    Hydrogen Torch writes the model size as bare ``IMAGE_HEIGHT``/``IMAGE_WIDTH`` tokens (not valid
    JSON) and uses 1.x argument names. ``always_apply`` becomes ``p=1``; renamed arguments are mapped;
    arguments a transform no longer takes are dropped with a warning. ``key`` names the config key in
    error messages.
    """
    text = re.sub(r"\bIMAGE_HEIGHT\b", str(height), text)
    text = re.sub(r"\bIMAGE_WIDTH\b", str(width), text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{key} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}). "
            "Paste the pipeline exactly as Hydrogen Torch or A.to_dict wrote it."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{key} must be a JSON object holding an albumentations pipeline, not {data!r}.")
    node = data.get("transform", data)
    try:
        transform = A.from_dict({"transform": _upgrade(node, key)})
    except (KeyError, ValueError, TypeError) as error:
        raise ConfigError(f"{key}: albumentations cannot build this pipeline: {error}") from None
    return transform if isinstance(transform, A.Compose) else A.Compose([transform])


def _upgrade(node: Any, key: str) -> dict[str, Any]:
    """Rewrite one serialised transform (and its children) for albumentations 2.x."""
    if not isinstance(node, dict) or "__class_fullname__" not in node:
        raise ConfigError(f"{key}: every transform needs a '__class_fullname__'; found {node!r}.")
    node = dict(node)
    name = str(node["__class_fullname__"]).rsplit(".", 1)[-1]
    name = _RENAMED_TRANSFORMS.get(name, name)
    cls: type[Any] | None = getattr(A, name, None)  # checked just below: albumentations names functions too
    if not isinstance(cls, type):
        raise ConfigError(
            f"{key}: unknown transform {node['__class_fullname__']!r}; albumentations "
            f"{A.__version__} has no such class. Replace it or remove it from the pipeline."
        )
    node["__class_fullname__"] = name
    parameters = inspect.signature(cls.__init__).parameters
    if node.pop("always_apply", False):
        node["p"] = 1.0
    elif "p" in parameters:  # from_dict would otherwise default a missing p to 0.5, even for Resize
        node.setdefault("p", parameters["p"].default)
    if name in _COMPOSE_CLASSES:
        node["transforms"] = [_upgrade(child, key) for child in node.get("transforms", [])]
        return node
    accepted = set(parameters) - {"self"}
    for old, new in _RENAMED_ARGS.items():
        if old in node and old not in accepted and new in accepted:
            node[new] = node.pop(old)
    for (lower, upper), new in _MERGED_ARGS.items():
        if lower in node and upper in node and new in accepted:
            node[new] = (node.pop(lower), node.pop(upper))
    if "var_limit" in node and "std_range" in accepted:  # GaussNoise: pixel variance -> std in [0, 1]
        node["std_range"] = tuple(float(np.sqrt(v)) / 255 for v in _pair(node.pop("var_limit")))
    if {"height", "width"} <= node.keys() and "size" in accepted:  # Random(Resized|Sized)Crop
        node["size"] = (node.pop("height"), node.pop("width"))
    takes_any = any(param.kind is param.VAR_KEYWORD for param in parameters.values())
    unknown = [] if takes_any else sorted(set(node) - accepted - {"__class_fullname__", "p"})
    if unknown:
        warnings.warn(
            f"{key}: {name} no longer takes {', '.join(unknown)} in albumentations {A.__version__}; "
            "ignoring them. Check the pipeline still does what you meant.",
            stacklevel=2,
        )
        for arg in unknown:
            del node[arg]
    return node


def _pair(value: Any) -> tuple[float, float]:
    # np.isscalar narrows to any numpy scalar, complex and bytes included; a var_limit scalar is a number.
    return (0.0, float(cast(float, value))) if np.isscalar(value) else (float(value[0]), float(value[1]))


# Batch mixing. A mixer gets the batch, a partner index per sample, and the mixing weight ``lam`` of
# the original, and returns new tensors (inputs untouched).
Mixer = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, float, AugmentationConfig, torch.Generator],
    tuple[torch.Tensor, torch.Tensor],
]


def mixup(
    images: torch.Tensor,
    masks: torch.Tensor,
    partner: torch.Tensor,
    lam: float,
    aug_cfg: AugmentationConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend whole images; the mask blends by ``lam`` (Ratio) or keeps smoke from either (Max)."""
    mixed = lam * images + (1 - lam) * images[partner]
    if aug_cfg.mix_target == "Max":
        return mixed, torch.maximum(masks, masks[partner])
    return mixed, lam * masks + (1 - lam) * masks[partner]


def cutmix(
    images: torch.Tensor,
    masks: torch.Tensor,
    partner: torch.Tensor,
    lam: float,
    aug_cfg: AugmentationConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box of area ``1 - lam`` from the partner, its mask with it.

    The box lies wholly inside the image so its area is what ``lam`` asks for; with ``cutmix_corner`` it
    sits in a random corner. Each pixel then belongs to one image, so the pasted mask is exact and
    ``mix_target`` does not apply.
    """
    height, width = images.shape[-2:]
    side = float(np.sqrt(1 - lam))
    box_h, box_w = round(height * side), round(width * side)
    if aug_cfg.cutmix_corner:
        corner = int(torch.randint(4, (1,), generator=generator))
        top = 0 if corner < 2 else height - box_h
        left = 0 if corner % 2 == 0 else width - box_w
    else:
        top = int(torch.randint(height - box_h + 1, (1,), generator=generator))
        left = int(torch.randint(width - box_w + 1, (1,), generator=generator))
    rows, cols = slice(top, top + box_h), slice(left, left + box_w)
    images, masks = images.clone(), masks.clone()
    images[..., rows, cols] = images[partner][..., rows, cols]
    masks[..., rows, cols] = masks[partner][..., rows, cols]
    return images, masks


MIXERS: dict[str, Mixer] = {"Mixup": mixup, "Cutmix": cutmix}


def mix_batch(
    images: torch.Tensor, masks: torch.Tensor, aug_cfg: AugmentationConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a training batch with a shuffled copy of itself, ``mix_iterations`` times.

    Each iteration happens with probability ``mix_probability`` and draws ``lam ~ Beta(a, a)`` with
    ``a = mix_concentration``. ``generator`` (CPU) makes it reproducible. ``Disabled`` returns the batch.
    """
    mixer = MIXERS.get(aug_cfg.mix_image)
    if mixer is None:
        return images, masks
    for _ in range(aug_cfg.mix_iterations):
        if float(torch.rand((), generator=generator)) >= aug_cfg.mix_probability:
            continue
        beta_seed = int(torch.randint(2**62, (1,), generator=generator))
        concentration = aug_cfg.mix_concentration
        lam = float(np.random.default_rng(beta_seed).beta(concentration, concentration))
        partner = torch.randperm(images.shape[0], generator=generator).to(images.device)
        images, masks = mixer(images, masks, partner, lam, aug_cfg, generator)
    return images, masks
