"""Mixed precision by device, for training and scoring alike: the number format that is fast where it runs,
never slower than plain float32 (``benchmarks/precision.py`` measures it on the machine at hand).

On CUDA, float16 (Hydrogen Torch's meaning). On a CPU, bfloat16 where it has native bfloat16 units:
- Intel AMX (2-core Xeon): a U-Net training step ran 2.2x faster, a 1280x960 frame scored 2.7x faster;
- AVX512-BF16 (2-core AMD EPYC, family 26): a training step took 0.56x (ResNet34) and 0.40x
  (EfficientNet-Lite0) the float32 time, a frame 0.63x and 0.56x; on family 25, 0.38x and 0.59x, a
  frame 0.38x and 0.27x;
- AVX2 only: float32, since bfloat16 is emulated there. The same holds where oneDNN is told to stop below
  its bfloat16 kernels (``ONEDNN_MAX_CPU_ISA=AVX2``, as on shared hosts or to try an AVX2 machine's code
  paths on a newer one): the CPU has the units, but the convolutions no longer use them.
"""

from __future__ import annotations

import os

import torch

_CPU_BFLOAT16_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
# oneDNN's instruction-set caps below ``AVX512_CORE_BF16``: under them its convolutions run bfloat16 emulated.
_ONEDNN_CAPS_WITHOUT_BFLOAT16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def onednn_isa_cap() -> str | None:
    """The instruction-set cap oneDNN reads from the environment (its own name first), upper-cased."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return cap.strip().upper() if cap else None


def cpu_has_native_bfloat16() -> bool:
    """AMX or AVX512-BF16 that oneDNN may use: there bfloat16 autocast speeds a CPU step up; elsewhere it
    slows it."""
    if onednn_isa_cap() in _ONEDNN_CAPS_WITHOUT_BFLOAT16:
        return False
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
