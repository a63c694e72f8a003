"""Does mixed precision pay on this CPU? fp32 against bfloat16 autocast, timed in turns in one run.

smokeseg's precision defaults (``smokeseg.model.precision``) must never be slower than plain fp32
PyTorch on any machine: bfloat16 autocast where the CPU has AMX or AVX512-BF16, float32 elsewhere.
This measures a training step (forward, backward, AdamW) and the scoring of one 1280x960 frame in each
number format and memory layout, alternating the variants in every repetition so that a busy machine
slows them alike, and prints the ratios beside the choice smokeseg makes on this CPU. Only ratios from
one run compare: on a shared, busy machine a single pair can mislead (one such pair here showed
bfloat16 1.9x slower; three alternating runs showed it 0.56x).

usage: python benchmarks/precision.py [--repeats 3] [--encoders resnet34 tu-efficientnet_lite0] [--out F]

An AVX2-only CPU's code paths on a newer one: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python
benchmarks/precision.py`` (torch's kernels and oneDNN's convolutions then use AVX2 alone, and smokeseg
chooses float32 as it would there). Where bfloat16 would run emulated its variants are left out (a
training step took about 10x float32's); ``--emulated-bfloat16`` times them anyway.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from machine import cpu_description

from smokeseg.model.precision import mixed_precision_dtype
from smokeseg.storage import write_text_atomic

TRAIN_BATCH = (8, 3, 256, 256)
FRAME = (1, 3, 960, 1280)


def _training_step(
    model: torch.nn.Module, dtype: torch.dtype | None, channels_last: bool = False
) -> Callable[[], None]:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(TRAIN_BATCH, generator=generator).to(memory_format=layout)
    masks = (torch.rand((TRAIN_BATCH[0], 1, *TRAIN_BATCH[2:]), generator=generator) > 0.5).float()
    model = model.to(memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(images).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _scoring(model: torch.nn.Module, dtype: torch.dtype | None, channels_last: bool) -> Callable[[], None]:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    frame = torch.randn(FRAME).to(memory_format=layout)
    scorer = model.eval().to(memory_format=layout)

    def score() -> None:
        with (
            torch.inference_mode(),
            torch.autocast("cpu", dtype or torch.bfloat16, enabled=dtype is not None),
        ):
            scorer(frame)

    return score


def _timed_in_turns(variants: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each variant; one warm-up call each, then the variants alternate."""
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


def _ratio(times: dict[str, float], variant: str, baseline: str) -> float | None:
    """``variant``'s time over ``baseline``'s; None when either was not timed."""
    if variant not in times or baseline not in times:
        return None
    return round(times[variant] / times[baseline], 2)


def measure(encoder: str, repeats: int, smokeseg_bfloat16: bool, with_bfloat16: bool) -> dict[str, object]:
    """Training and scoring times of each variant (``with_bfloat16``: the bfloat16 ones too), and each
    over plain fp32; ``smokeseg_bfloat16``: whether smokeseg's default on this CPU is bfloat16."""

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return smp.Unet(encoder, encoder_weights=None, classes=1)

    training_variants = {
        "fp32": lambda: _training_step(model(), None),
        "fp32_channels_last": lambda: _training_step(model(), None, channels_last=True),
        "bf16": lambda: _training_step(model(), torch.bfloat16),
        "bf16_channels_last": lambda: _training_step(model(), torch.bfloat16, channels_last=True),
    }
    scoring_variants = {
        "fp32": lambda: _scoring(model(), None, channels_last=False),
        "fp32_channels_last": lambda: _scoring(model(), None, channels_last=True),
        "bf16_channels_last": lambda: _scoring(model(), torch.bfloat16, channels_last=True),
    }

    def timed(variants: dict[str, Callable[[], Callable[[], None]]]) -> dict[str, float]:
        kept = {name: make() for name, make in variants.items() if with_bfloat16 or "bf16" not in name}
        return _timed_in_turns(kept, repeats)

    training, scoring = timed(training_variants), timed(scoring_variants)
    # smokeseg's defaults on this CPU: bfloat16 trains contiguous and float32 channels-last; scoring is
    # always channels-last. Each must not be slower than plain float32 (contiguous, no autocast).
    default_training = "bf16" if smokeseg_bfloat16 else "fp32_channels_last"
    default_scoring = "bf16_channels_last" if smokeseg_bfloat16 else "fp32_channels_last"
    return {
        "encoder": encoder,
        "smokeseg_default_training": default_training,
        "smokeseg_default_training_over_fp32": _ratio(training, default_training, "fp32"),
        "smokeseg_default_scoring": default_scoring,
        "smokeseg_default_scoring_over_fp32": _ratio(scoring, default_scoring, "fp32"),
        "training_step_s": training,
        "training_bf16_over_fp32": _ratio(training, "bf16", "fp32"),
        "training_fp32_channels_last_over_fp32": _ratio(training, "fp32_channels_last", "fp32"),
        "training_bf16_channels_last_over_bf16": _ratio(training, "bf16_channels_last", "bf16"),
        "scoring_frame_s": scoring,
        "scoring_fp32_channels_last_over_fp32": _ratio(scoring, "fp32_channels_last", "fp32"),
        "scoring_bf16_channels_last_over_fp32": _ratio(scoring, "bf16_channels_last", "fp32"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encoders", nargs="+", default=["resnet34", "tu-efficientnet_lite0"])
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--emulated-bfloat16",
        action="store_true",
        help="also time bfloat16 where the CPU (or an ISA cap) lacks bfloat16 units: about 10x float32 there",
    )
    args = parser.parse_args()
    machine = cpu_description()
    print(json.dumps(machine, indent=1), flush=True)
    dtype = mixed_precision_dtype(True, "cpu")
    bfloat16 = dtype is not None
    results = {
        "machine": machine,
        "smokeseg_mixed_precision_on_cpu": str(dtype),
        "encoders": [
            measure(encoder, args.repeats, bfloat16, bfloat16 or args.emulated_bfloat16)
            for encoder in args.encoders
        ],
    }
    text = json.dumps(results, indent=1)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
