"""Mixed precision by device, for training and scoring alike: the number format that is fast where it runs,
never slower than plain float32 (``benchmarks/precision.py`` measures it on the machine at hand).

On CUDA, float16 (Hydrogen Torch's meaning). On a CPU, bfloat16 where it has native bfloat16 units:
- Intel AMX (2-core Xeon): a U-Net training step ran 2.2x faster, a 1280x960 frame scored 2.7x faster;
- AVX512-BF16 (2-core AMD EPYC, family 26): a training step took 0.56x (ResNet34) and 0.40x
  (EfficientNet-Lite0) the float32 time, a frame 0.63x and 0.56x; on family 25, 0.38x and 0.59x, a
  frame 0.38x and 0.27x;
- AVX2 only: float32, since bfloat16 is emulated there.
"""

from __future__ import annotations

import torch

_CPU_BFLOAT16_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


def cpu_has_native_bfloat16() -> bool:
    """AMX or AVX512-BF16: there bfloat16 autocast speeds a CPU step up; elsewhere it slows it."""
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in _CPU_BFLOAT16_PROBES)


def mixed_precision_dtype(enabled: bool, device_type: str) -> torch.dtype | None:
    """The autocast type for ``environment.mixed_precision_training`` / ``_inference``; None for float32."""
    if not enabled:
        return None
    if device_type == "cuda":
        return torch.float16
    if device_type == "cpu" and cpu_has_native_bfloat16():
        return torch.bfloat16
    return None
