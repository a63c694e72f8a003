"""Fold groups: which samples must land on the same side of a train/validation split.

Validation scores only mean something when no validation frame has a near-twin in training. Wildfire
camera datasets are runs of consecutive frames of a few fires, so splitting by image flatters the model.

==============  ==========================================================================================
rule            group of a sample
==============  ==========================================================================================
column          its ``dataset.group_fold_column`` value (the image id by default)
fire_sequence   ``<unix time>_+<seconds>`` frames (FIgLib): ``fire-<unix time - seconds>``, the fire's start;
                ``ck...`` frames (HPWREN camera frames named by CUID): ``scene-<first image id>``, one per
                connected run of look-alike frames (same camera view); any other name: as ``column``
==============  ==========================================================================================
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

import numpy as np
from PIL import Image
from scipy.sparse import csr_matrix, vstack
from scipy.sparse.csgraph import connected_components

from smokeseg.data.formats import Sample, parallel_map
from smokeseg.errors import ConfigError

# FIgLib names a frame by its unix time and its offset from the fire's start: 1528757586_+00180.
_TIMESTAMP_NAME = re.compile(r"(\d+)_\+(\d+)")
# HPWREN frames labelled in the AI For Mankind tool are named by a 25-character CUID: ck + 23.
_CAMERA_FRAME_NAME = re.compile(r"ck[0-9a-z]{23}")
# A 4:3 grayscale thumbnail: enough to tell camera views apart, too coarse for smoke to matter.
THUMBNAIL_SIZE = (32, 24)
# 1 - correlation of two thumbnails below which they are one scene: the middle of the plateau of the
# group count on SMOKE5K's 948 ck frames (56 groups at 0.05, 53 at 0.06, 51 at 0.07; links beyond 0.075
# chain different cameras into groups of 100+). 99% of frames have a neighbour within 0.036.
SCENE_DISTANCE = 0.06
# Rows of the distance matrix computed at once, so memory stays O(block * n), not O(n^2).
_BLOCK = 1024

GroupRule = Callable[[Sequence[Sample]], list[str]]


def _thumbnail(sample: Sample) -> np.ndarray:
    """Zero-mean, unit-norm gray thumbnail: dot products of two are their correlation."""
    gray = Image.fromarray(sample.load_image()).convert("L").resize(THUMBNAIL_SIZE, Image.Resampling.BOX)
    pixels = np.asarray(gray, dtype=np.float64).ravel()
    pixels -= pixels.mean()
    return pixels / max(float(np.linalg.norm(pixels)), 1e-12)


def similar_image_groups(samples: Sequence[Sample], threshold: float = SCENE_DISTANCE) -> list[str]:
    """``scene-<smallest image id>`` per sample: connected components of the look-alike graph.

    Two samples are linked when their thumbnails' correlation distance is below ``threshold``; linking
    is transitive, so a slowly changing sequence stays one group however far its ends drift apart.
    """
    if not samples:
        return []
    thumbnails = np.stack(parallel_map(_thumbnail, samples))
    linked = vstack(
        [
            csr_matrix(thumbnails[start : start + _BLOCK] @ thumbnails.T > 1 - threshold)
            for start in range(0, len(thumbnails), _BLOCK)
        ]
    )
    _, labels = connected_components(linked, directed=False)
    # Name each component after its smallest image id, so names do not depend on row order.
    ids = np.asarray([sample.image_id for sample in samples])
    order = np.lexsort((ids, labels))
    smallest_id = ids[order][np.unique(labels[order], return_index=True)[1]]
    return [f"scene-{name}" for name in smallest_id[labels]]


def _column_groups(samples: Sequence[Sample]) -> list[str]:
    return [sample.group for sample in samples]


def _fire_sequence_groups(samples: Sequence[Sample]) -> list[str]:
    groups = _column_groups(samples)
    stems = [PurePosixPath(sample.image_id).stem for sample in samples]
    for index, stem in enumerate(stems):
        if match := _TIMESTAMP_NAME.fullmatch(stem):
            groups[index] = f"fire-{int(match[1]) - int(match[2])}"
    frames = [index for index, stem in enumerate(stems) if _CAMERA_FRAME_NAME.fullmatch(stem)]
    for index, scene in zip(frames, similar_image_groups([samples[i] for i in frames]), strict=True):
        groups[index] = scene
    return groups


GROUP_RULES: dict[str, GroupRule] = {
    "column": _column_groups,
    "fire_sequence": _fire_sequence_groups,
}


def assign_groups(samples: Sequence[Sample], rule: str) -> list[str]:
    """Each sample's fold group under ``rule`` (a ``GROUP_RULES`` name); the samples are not changed."""
    try:
        grouper = GROUP_RULES[rule]
    except KeyError:
        raise ConfigError(
            f"dataset.group_rule {rule!r} is not a group rule; use one of {', '.join(GROUP_RULES)}."
        ) from None
    return grouper(samples)
