"""The machine a benchmark ran on, printed and stored with every result: a time without it means nothing.

Machines here differ in their bfloat16 units (Intel AMX, AVX512-BF16 alone, or AVX2 only), which decide
whether mixed precision speeds a step up or slows it down, so each result carries the CPU's model, its
flags and what torch itself detects, with the instruction-set caps in force (``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``): set to AVX2 they run a newer CPU on an AVX2-only machine's code paths.
"""

from __future__ import annotations

import re
import subprocess

import torch

from smokeseg.model.precision import onednn_isa_cap

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_description() -> dict[str, object]:
    """The CPU model from lscpu, its vector and bfloat16 flags, torch's own probes and thread count."""
    info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"^([^:\n]+):\s*(.*)$", info, flags=re.MULTILINE))
    flags = set(fields.get("Flags", "").split())
    return {
        "cpu": fields.get("Model name", "unknown"),
        "cpu_family_model": f"{fields.get('CPU family')}/{fields.get('Model')}",
        "cpus": fields.get("CPU(s)"),
        "flags": {flag: flag in flags for flag in FLAGS},
        "torch_amx": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
        "torch_avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_max_cpu_isa": onednn_isa_cap() or "default",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
