"""Does the channels-last layout change what a training step computes? One batch's gradients in each
number format and layout, against fp32 contiguous.

Training on CPU can run channels-last for speed (``environment.channels_last_training``, off by default
since the tenth session: whole runs scored lower). Two runs of the same recipe in two layouts follow
different trajectories (rounding differs, and training amplifies it), so a single
run cannot show whether the layout costs accuracy; this compares one step's gradients instead: if
bfloat16 channels-last is as close to fp32 as bfloat16 contiguous is, the layout adds nothing to
bfloat16's own error.

usage: python benchmarks/layout_gradients.py [CHECKPOINT] (a smokeseg checkpoint to start from: the
       smoke-pretrained model is where fine-tuning starts; default: a randomly initialised Lite0 U-Net)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from machine import cpu_description

from smokeseg.inference.runtimes import load_checkpoint

BATCH = (8, 3, 256, 256)
VARIANTS = {
    "fp32 channels-last": (torch.channels_last, False),
    "bf16 contiguous": (torch.contiguous_format, True),
    "bf16 channels-last": (torch.channels_last, True),
}


def load(checkpoint: Path | None) -> torch.nn.Module:
    torch.manual_seed(0)
    if checkpoint is None:
        return smp.Unet("tu-efficientnet_lite0", encoder_weights=None, classes=1)
    return load_checkpoint(checkpoint)[0]


def gradients(model: torch.nn.Module, layout: torch.memory_format, bf16: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, generator=generator).contiguous(memory_format=layout)
    masks = (torch.rand((BATCH[0], 1, *BATCH[2:]), generator=generator) > 0.7).float()
    model = model.to(memory_format=layout).train()
    model.zero_grad()
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        logits = model(images).float()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, masks).backward()
    return torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path, nargs="?")
    args = parser.parse_args()
    model = load(args.checkpoint)
    reference = gradients(model, torch.contiguous_format, bf16=False)
    results = {}
    for name, (layout, bf16) in VARIANTS.items():
        grad = gradients(model, layout, bf16)
        results[name] = {
            "relative_error": round(float((grad - reference).norm() / reference.norm()), 4),
            "cosine": round(float(torch.nn.functional.cosine_similarity(grad, reference, dim=0)), 4),
        }
    print(json.dumps({"machine": cpu_description(), "checkpoint": str(args.checkpoint), **results}, indent=1))


if __name__ == "__main__":
    main()
