"""What the larger offline encoders cost: parameters and one training step of a U-Net with each.

For every encoder with packaged offline weights (``smokeseg.model.weights.PACKAGED_WEIGHTS``): the
encoder's and the whole U-Net's parameter counts, the forward pass's floating-point operations, and
the median time of a forward + backward pass (binary cross-entropy on logits) on a batch of
4x3x256x256 crops, in fp32 on the CPU, after warm-up steps. Times are wall time and the process's CPU
time, which stays comparable between encoders when other jobs share the cores; the operations
(torch's FlopCounterMode) do not depend on the machine at all. The backward pass is left out of that
count: FlopCounterMode counts a depthwise convolution's backward as if it were dense (64x too many
for 64 channels, torch 2.14), and EfficientNets are mostly depthwise convolutions. The CPU's model and
whether it has native bfloat16 units (avx512_bf16, amx) are printed too, since mixed-precision
training changes these times on such CPUs. Accuracy is not measured here.

usage: python benchmarks/encoder_cost.py [--steps 5] [--threads N] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from machine import cpu_description
from torch.utils.flop_counter import FlopCounterMode

from smokeseg.config.schema import ArchitectureConfig
from smokeseg.model import build_model
from smokeseg.model.weights import PACKAGED_WEIGHTS
from smokeseg.storage import write_text_atomic

BATCH_SHAPE = (4, 3, 256, 256)
WARMUP_STEPS = 2


def training_step(model: torch.nn.Module) -> None:
    """One forward + backward pass on a fixed random batch."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH_SHAPE, generator=generator)
    masks = (torch.rand((BATCH_SHAPE[0], 1, *BATCH_SHAPE[2:]), generator=generator) > 0.5).float()
    model.zero_grad(set_to_none=True)
    torch.nn.functional.binary_cross_entropy_with_logits(model(images), masks).backward()


def step_seconds(model: torch.nn.Module, steps: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each training step after warm-up."""
    times = []
    for step in range(WARMUP_STEPS + steps):
        started, started_cpu = time.perf_counter(), time.process_time()
        training_step(model)
        if step >= WARMUP_STEPS:
            times.append((time.perf_counter() - started, time.process_time() - started_cpu))
    return times


def measure(name: str, steps: int) -> dict[str, object]:
    model = build_model(ArchitectureConfig(architecture="Unet", backbone=name, pretrained=False)).train()
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        model(torch.zeros(BATCH_SHAPE))
    wall, cpu = zip(*step_seconds(model, steps), strict=True)
    return {
        "encoder": name,
        "encoder_parameters": sum(p.numel() for p in model.get_submodule("encoder").parameters()),
        "unet_parameters": sum(p.numel() for p in model.parameters()),
        "forward_gflop": round(flops.get_total_flops() / 1e9, 1),
        "step_wall_s_median": round(statistics.median(wall), 3),
        "step_cpu_s_median": round(statistics.median(cpu), 3),
        "step_wall_s_all": [round(t, 3) for t in wall],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per encoder, after warm-up")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", help="write the results as JSON here too")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {
        **cpu_description(),
        "batch": list(BATCH_SHAPE),
        "dtype": "float32",
        "encoders": [measure(name, args.steps) for name in PACKAGED_WEIGHTS],
    }
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
