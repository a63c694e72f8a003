"""Mixed precision by device and purpose: the number format that is fast where it runs, never slower
than plain float32.

On CUDA, float16 (Hydrogen Torch's meaning). On a CPU, bfloat16 only where its units make that work
faster, which differs between training and scoring (``benchmarks/precision.py`` measures both):
- Intel AMX: a U-Net training step ran 2.2x faster and a 1280x960 frame scored 2.7x faster (2-core Xeon).
- AVX512-BF16 without AMX (AMD EPYC, Zen 4): a training step ran 1.9x *slower* in bfloat16, while a
  frame scored in 0.65x the time; so training stays float32 there and scoring uses bfloat16.
- AVX2 only: float32 for both.
"""

from __future__ import annotations

from typing import Literal

import torch

Purpose = Literal["training", "inference"]

# torch.cpu probes of the units that make bfloat16 autocast pay off, per purpose.
_CPU_BFLOAT16_PROBES: dict[Purpose, tuple[str, ...]] = {
    "training": ("_is_amx_tile_supported",),
    "inference": ("_is_amx_tile_supported", "_is_avx512_bf16_supported"),
}


def cpu_bfloat16_pays(purpose: Purpose) -> bool:
    """Whether this CPU runs ``purpose`` faster under bfloat16 autocast than in float32."""
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in _CPU_BFLOAT16_PROBES[purpose])


def mixed_precision_dtype(enabled: bool, device_type: str, purpose: Purpose) -> torch.dtype | None:
    """The autocast type for ``environment.mixed_precision_training`` / ``_inference``; None for float32."""
    if not enabled:
        return None
    if device_type == "cuda":
        return torch.float16
    if device_type == "cpu" and cpu_bfloat16_pays(purpose):
        return torch.bfloat16
    return None
