"""A procedural smoke dataset, so the demo trains with no download.

Each image is a landscape (sky gradient, textured ridges fading with distance) that may hold
distractors real cameras see (clouds, valley fog, haze) and, in most images, one or two smoke plumes:
grey-white columns that rise from a ridge, widen and drift with the wind, with turbulent texture.
Nearer ridges hide the bottom of a plume behind them, as they do in camera frames.

The mask is exact: a pixel is smoke where the plume's visible opacity exceeds ``MASK_ALPHA``, so
faint wisps stay unlabelled the way annotators leave them. Everything is seeded per image
(``seed``, index), so the same seed writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from smokeseg.config.load import config_from_dict, save_config
from smokeseg.data.rle import rle_encode
from smokeseg.storage import atomic_path

MASK_ALPHA = 0.4
NO_SMOKE_FRACTION = 0.15
CONFIG_NAME = "smoke_demo.yaml"

# (zenith, horizon) RGB. Overcast skies are rarer: grey on grey is hard even for people.
SKIES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "clear": ((60, 110, 185), (165, 198, 230)),
    "hazy": ((120, 155, 195), (205, 212, 215)),
    "dusk": ((55, 65, 115), (230, 165, 115)),
    "overcast": ((140, 146, 158), (190, 194, 200)),
}
SKY_WEIGHTS = np.array([0.45, 0.25, 0.15, 0.15])

# Ground colours from far-range to foreground, before distance fading.
GROUNDS: dict[str, tuple[int, int, int]] = {
    "forest": (45, 75, 40),
    "scrub": (95, 95, 55),
    "dry grass": (150, 130, 80),
    "rock": (95, 85, 80),
}


def _value_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth noise in [0, 1]: random values on a coarse grid, smoothstep-interpolated."""
    grid = rng.random((cells[0] + 2, cells[1] + 2))
    ys, xs = np.linspace(0, cells[0], height), np.linspace(0, cells[1], width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = ys - y0, xs - x0
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None], (fx * fx * (3 - 2 * fx))[None, :]
    y0, x0 = y0[:, None], x0[None, :]
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _fractal_noise(
    rng: np.random.Generator, height: int, width: int, cells: tuple[int, int], octaves: int = 4
) -> np.ndarray:
    """Value noise summed over octaves (each twice as fine, half as strong), in [0, 1]."""
    total = np.zeros((height, width))
    for octave in range(octaves):
        scale = 2**octave
        total += _value_noise(rng, height, width, (cells[0] * scale, cells[1] * scale)) / scale
    return total / sum(1 / 2**octave for octave in range(octaves))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _blend(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return image * (1 - alpha[..., None]) + colour * alpha[..., None]


def _sky(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sky gradient plus, sometimes, cumulus-like clouds: bright, compact, in the upper sky."""
    name = rng.choice(list(SKIES), p=SKY_WEIGHTS)
    zenith, horizon = (np.array(colour, float) for colour in SKIES[name])
    rows = np.linspace(0, 1, height)[:, None, None] ** 0.7
    image = np.broadcast_to(zenith * (1 - rows) + horizon * rows, (height, width, 3)).copy()
    if rng.random() < 0.5:
        noise = _fractal_noise(rng, height, width, (2, 3), octaves=5)
        threshold = rng.uniform(0.5, 0.62)
        upper = 1 - _smoothstep(np.linspace(0, 1, height) / 0.55)[:, None]
        alpha = np.clip((noise - threshold) / 0.08, 0, 1) * upper * rng.uniform(0.7, 0.95)
        shade = 0.88 + 0.12 * _fractal_noise(rng, height, width, (4, 6), octaves=3)
        image = _blend(image, np.array([248.0, 248, 250]) * shade[..., None], alpha)
    return image, horizon


def _plume(rng: np.random.Generator, height: int, width: int, x0: float, y0: float) -> np.ndarray:
    """Opacity of one plume rising from ``(x0, y0)``: a widening, leaning, turbulent column."""
    rise = rng.uniform(0.5, 1.1) * y0
    drift = rng.uniform(-0.6, 0.6) * rise
    base_width = rng.uniform(0.006, 0.02) * width
    top_width = rng.uniform(0.06, 0.16) * width
    wobble, phase = rng.uniform(0, 0.04) * width, rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    t = (y0 - yy) / rise
    tc = np.clip(t, 0, 1)
    centre = x0 + drift * tc**1.5 + wobble * tc * np.sin(2 * np.pi * 1.5 * tc + phase)
    spread = base_width + (top_width - base_width) * tc**0.7
    core = np.exp(-(((xx - centre) / spread) ** 4))  # flat-topped: a plume has an edge
    envelope = _smoothstep(t / 0.03) * (1 - _smoothstep((t - 0.65) / 0.4))
    texture = 0.45 + 0.8 * _fractal_noise(rng, height, width, (6, 8), octaves=4)
    return np.clip(rng.uniform(0.85, 1.05) * core * envelope * texture, 0, 1)


def _scene(rng: np.random.Generator, height: int, width: int, smoky: bool) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image (uint8) and its boolean smoke mask."""
    image, horizon = _sky(rng, height, width)
    rows = np.arange(height)[:, None]
    n_layers = int(rng.integers(2, 4))
    n_plumes = int(smoky) * (1 + int(rng.random() < 0.3))
    source_layers = rng.integers(0, n_layers, n_plumes)
    smoke = np.zeros((height, width))
    for layer in range(n_layers):
        depth = layer / max(n_layers - 1, 1)  # 0 far, 1 near
        base = height * (0.42 + 0.3 * depth + rng.uniform(-0.05, 0.05))
        amplitude = height * (0.12 - 0.05 * depth)
        ridge = base + amplitude * (_fractal_noise(rng, 1, width, (1, 3 + layer * 2))[0] - 0.5) * 2
        cover = np.clip(rows - ridge[None, :] + 0.5, 0, 1)  # one-pixel antialiased skyline
        colour = np.array(GROUNDS[rng.choice(list(GROUNDS))], float)
        colour = colour * (0.65 + 0.35 * depth) + horizon * 0.35 * (1 - depth)  # distance fades to sky
        texture = 0.75 + 0.5 * _fractal_noise(rng, height, width, (8, 10), octaves=4)
        image = _blend(image, colour * texture[..., None], cover)
        smoke *= 1 - cover
        if rng.random() < 0.2:  # valley fog: a soft white band lying on this ridge
            band = np.exp(-(((rows - ridge[None, :] - height * 0.03) / (height * 0.03)) ** 2))
            fog = band * _fractal_noise(rng, height, width, (2, 6)) * rng.uniform(0.3, 0.6)
            image = _blend(image, np.array([225.0, 228, 232]), fog)
            smoke *= 1 - fog
        for _ in range(int(np.sum(source_layers == layer))):
            x0 = rng.uniform(0.1, 0.9) * width
            alpha = _plume(rng, height, width, x0, ridge[int(x0)] + 2)
            tint = rng.uniform(180, 240) + rng.uniform(-12, 12) * np.array([1, 0.5, -0.5])  # grey-white
            shade = 0.85 + 0.3 * _fractal_noise(rng, height, width, (5, 7), octaves=3)
            image = _blend(image, tint * shade[..., None], alpha)
            smoke = 1 - (1 - smoke) * (1 - alpha)
    haze = rng.uniform(0, 0.2)
    image = image * (1 - haze) + horizon * haze
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), smoke > MASK_ALPHA


def _write_split(
    out_dir: Path, prefix: str, count: int, size: tuple[int, int], seed: int, stream: int
) -> pd.DataFrame:
    no_smoke = np.random.default_rng([seed, stream]).permutation(count)[: round(count * NO_SMOKE_FRACTION)]
    rows = []
    for index in range(count):
        image, mask = _scene(np.random.default_rng([seed, stream, index]), *size, smoky=index not in no_smoke)
        name = f"{prefix}_{index:03d}.jpg"
        with atomic_path(out_dir / "images" / name) as tmp:
            Image.fromarray(image).save(tmp, format="JPEG", quality=95)
        rows.append({"image_id": name, "class_id": "smoke", "rle_mask": rle_encode(mask, order="F")})
    return pd.DataFrame(rows, columns=["image_id", "class_id", "rle_mask"])


def _model_side(side: int) -> int:
    """Half the image side, on the multiple of 32 the encoder needs: CPU training stays near a minute."""
    return max(32, round(side / 64) * 32)


# A from-scratch ResNet18 U-Net learns these plumes in about 12 short epochs (test IoU ~0.6).
DEMO_SETTINGS: dict[str, dict[str, object]] = {
    "architecture": {"architecture": "Unet", "backbone": "resnet18", "pretrained": False},
    "dataset": {
        "data_folder": "images",
        "data_folder_test": "images",
        "train_dataframe": "train.pq",
        "test_dataframe": "test.pq",
    },
    "environment": {"number_of_workers": 0, "seed": 0, "mixed_precision_training": False},
    "training": {"batch_size": 8, "epochs": 12, "learning_rate": 0.003},
}


def generate_demo_dataset(
    out_dir: Path, n_train: int = 48, n_test: int = 16, size: tuple[int, int] = (192, 256), seed: int = 0
) -> Path:
    """Write images, ``train.pq``, ``test.pq`` and a config that trains on them; return the config path.

    ``size`` is (height, width) of the images. Files are written atomically, images first, then the
    tables, then the config, so a config on disk always points at complete data.
    """
    out_dir = Path(out_dir)
    tables = {
        "train.pq": _write_split(out_dir, "train", n_train, size, seed, stream=0),
        "test.pq": _write_split(out_dir, "test", n_test, size, seed, stream=1),
    }
    for name, table in tables.items():
        with atomic_path(out_dir / name) as tmp:
            table.to_parquet(tmp, index=False)
    image = {"image_height": _model_side(size[0]), "image_width": _model_side(size[1])}
    config = config_from_dict(
        {"experiment_name": "smoke_demo", **DEMO_SETTINGS, "image": image}, source="demo config"
    )
    return save_config(config, out_dir / CONFIG_NAME)
