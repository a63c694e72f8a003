"""Write the smoke-pretraining table: SMOKE5K frames, minus smoke-ht's images and every frame of their fires.

Pretraining must not see the images it is judged on, nor their neighbours: a frame of the same fire
(or the same camera view) is nearly the same picture. Groups come from ``dataset.group_rule:
fire_sequence``; any group holding a smoke-ht image is left out whole.

With ``--all-real`` it writes every real frame instead (no exclusion): the table for grouped
cross-validation on SMOKE5K's real frames.

usage: python benchmarks/smoke_pretrain_table.py OUT.pq [--synthetic N] [--seed 0] [--all-real]
The table's image ids are relative to ``../shared/datasets/smoke5k/images``.
"""

from __future__ import annotations

import argparse
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


def split_real_frames(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """SMOKE5K's real frames among ``samples``: (outside every fire and scene holding a smoke-ht image,
    the rest minus smoke-ht's own images). The first feed pretraining; the second were never trained
    on by it."""
    held_out = {
        PurePosixPath(name).name
        for table in ("train.pq", "test.pq")
        for name in read_table(SMOKE_HT / table)["image_id"]
    }
    real = [s for s in samples if not _is_synthetic(s.image_id)]
    groups = assign_groups(real, "fire_sequence")
    excluded_groups = {
        g for s, g in zip(real, groups, strict=True) if PurePosixPath(s.image_id).name in held_out
    }
    kept = [s for s, g in zip(real, groups, strict=True) if g not in excluded_groups]
    unseen = [
        s
        for s, g in zip(real, groups, strict=True)
        if g in excluded_groups and PurePosixPath(s.image_id).name not in held_out
    ]
    return kept, unseen


def pretraining_table(synthetic: int, seed: int, all_real: bool = False) -> pd.DataFrame:
    samples = samples_from_folders(SMOKE5K)
    if all_real:
        kept = [s for s in samples if not _is_synthetic(s.image_id)]
    else:
        kept, _ = split_real_frames(samples)
        print(f"real frames kept outside smoke-ht's fires and scenes: {len(kept)}")
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
    parser.add_argument("--all-real", action="store_true", help="every real frame, none left out")
    args = parser.parse_args()
    table = pretraining_table(args.synthetic, args.seed, args.all_real)
    with atomic_path(args.out) as tmp:
        table.to_parquet(tmp, index=False)
    print(f"{len(table)} rows -> {args.out}")


if __name__ == "__main__":
    main()
