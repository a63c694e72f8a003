"""Mixed precision by device, for training and scoring alike: the number format that is fast where it runs."""

from __future__ import annotations

import torch

_CPU_BFLOAT16_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


def cpu_has_native_bfloat16() -> bool:
    """AMX or AVX512-BF16: there bfloat16 autocast halves a CPU training step; elsewhere it slows it."""
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in _CPU_BFLOAT16_PROBES)


def mixed_precision_dtype(enabled: bool, device_type: str) -> torch.dtype | None:
    """The autocast type for ``environment.mixed_precision_*``, None for full precision.

    float16 on CUDA (Hydrogen Torch's meaning); bfloat16 on CPUs with native bfloat16 units (a U-Net
    training step ran 2.2x faster, a 1280x960 frame scored 2.7x faster, on a 2-core Xeon with AMX).
    """
    if not enabled:
        return None
    if device_type == "cuda":
        return torch.float16
    if device_type == "cpu" and cpu_has_native_bfloat16():
        return torch.bfloat16
    return None
