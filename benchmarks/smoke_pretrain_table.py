"""Write the smoke-pretraining table: SMOKE5K frames, minus smoke-ht's images and every frame of their fires.

Pretraining must not see the images it is judged on, nor their neighbours: a frame of the same fire
(or the same camera view) is nearly the same picture. Groups come from ``dataset.group_rule:
fire_sequence``; any group holding a smoke-ht image is left out whole.

With ``--real all`` it writes every real frame instead (no exclusion): the table for grouped
cross-validation on SMOKE5K's real frames. With ``--real training-scenes``, the frames of the fires and
scenes of smoke-ht's training images that hold no smoke-ht test image: more frames of the cameras a
fine-tuning run already trains on, never of a test camera.

usage: python benchmarks/smoke_pretrain_table.py OUT.pq [--synthetic N] [--seed 0]
       [--real outside|training-scenes|all ...]
The table's image ids are relative to ``../shared/datasets/smoke5k/images``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from smokeseg.data.formats import Sample, parallel_map, read_table, samples_from_folders
from smokeseg.data.groups import assign_groups
from smokeseg.data.rle import rle_encode
from smokeseg.storage import atomic_path

SHARED = Path(__file__).resolve().parents[2] / "shared"
SMOKE5K = SHARED / "datasets/smoke5k"
SMOKE_HT = (
    SHARED / "datasets/smoke-ht/data/anon/Smoke_segmentation/content/drive/MyDrive/BushFire/Image_segment"
)


def _is_synthetic(image_id: str) -> bool:
    return PurePosixPath(image_id).stem.replace("_", "").isdigit()


@dataclass(frozen=True)
class RealFrames:
    """SMOKE5K's real frames other than smoke-ht's own images, by the fire or camera scene they belong to."""

    outside: list[Sample]  # no smoke-ht image in their group: what pretraining may see
    training_scenes: list[Sample]  # groups holding smoke-ht training images only: fine-tuning's scenes
    test_scenes: list[Sample]  # groups holding a smoke-ht test image: never trained on

    @property
    def unseen_by_pretraining(self) -> list[Sample]:
        """In image-id order, as the frames were listed (crops are seeded by their frame's position)."""
        return sorted(self.training_scenes + self.test_scenes, key=lambda sample: sample.image_id)


def split_real_frames(samples: list[Sample]) -> RealFrames:
    """SMOKE5K's real frames among ``samples``, split by whether their group (``fire_sequence``) holds a
    smoke-ht training or test image."""
    names = {
        table: {PurePosixPath(name).name for name in read_table(SMOKE_HT / f"{table}.pq")["image_id"]}
        for table in ("train", "test")
    }
    real = [s for s in samples if not _is_synthetic(s.image_id)]
    groups = assign_groups(real, "fire_sequence")
    groups_of = {
        table: {g for s, g in zip(real, groups, strict=True) if PurePosixPath(s.image_id).name in held}
        for table, held in names.items()
    }
    parts: dict[str, list[Sample]] = {"outside": [], "training_scenes": [], "test_scenes": []}
    for sample, group in zip(real, groups, strict=True):
        if PurePosixPath(sample.image_id).name in names["train"] | names["test"]:
            continue
        part = (
            "test_scenes"
            if group in groups_of["test"]
            else "training_scenes"
            if group in groups_of["train"]
            else "outside"
        )
        parts[part].append(sample)
    return RealFrames(**parts)


# --real: which real frames the table holds (one or more).
REAL_FRAMES = ("outside", "training-scenes", "all")


def pretraining_table(synthetic: int, seed: int, real: tuple[str, ...] = ("outside",)) -> pd.DataFrame:
    samples = samples_from_folders(SMOKE5K)
    if "all" in real:
        kept = [s for s in samples if not _is_synthetic(s.image_id)]
    else:
        frames = split_real_frames(samples)
        parts = {"outside": frames.outside, "training-scenes": frames.training_scenes}
        kept = [sample for part in real for sample in parts[part]]
        print(f"real frames kept ({' + '.join(real)}): {len(kept)}")
    synthetic_samples = [s for s in samples if _is_synthetic(s.image_id)]
    chosen = np.random.default_rng(seed).permutation(len(synthetic_samples))[:synthetic]
    kept += [synthetic_samples[i] for i in sorted(chosen)]

    def row(sample) -> dict[str, str]:
        image = sample.load_image()
        return {
            "image_id": sample.image_id,
            "class_id": "smoke",
            "rle_mask": rle_encode(sample.load_mask(*image.shape[:2])),
        }

    return pd.DataFrame(parallel_map(row, kept))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--synthetic", type=int, default=0, help="synthetic SMOKE5K images to add")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--real",
        choices=REAL_FRAMES,
        nargs="+",
        default=["outside"],
        help="outside: frames of no smoke-ht fire or scene (pretraining); training-scenes: frames of the "
        "scenes of smoke-ht's training images only (more fine-tuning frames from the site's cameras); "
        "all: every real frame (grouped cross-validation)",
    )
    args = parser.parse_args()
    table = pretraining_table(args.synthetic, args.seed, tuple(args.real))
    with atomic_path(args.out) as tmp:
        table.to_parquet(tmp, index=False)
    print(f"{len(table)} rows -> {args.out}")


if __name__ == "__main__":
    main()
