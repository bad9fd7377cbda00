"""PGD steps per second on the organism and a tiny random LLaVA, against a plain forward of the same batch in the
same process (the ratio is what a PGD step costs beyond reading the targets once).

    python benchmarks/bench_pgd.py [--steps 20] [--batch 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from workbench.attacks.pgd import PGDSettings, pgd_attack, target_loss, to_tensor
from workbench.core.models import load_vlm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    from conftest import tiny

    for name, vlm in (("organism", load_vlm("organism")), ("tiny-random:llava", tiny("llava"))):
        size = (64, 64) if name == "organism" else (32, 32)
        image = Image.new("RGB", size, (235, 235, 235))
        prompts = [f"describe the image {i}" for i in range(args.batch)]
        settings = PGDSettings(steps=args.steps, batch=args.batch, random_start=False)
        pgd_attack(vlm, image, prompts[:1], ["hello"], PGDSettings(steps=1, batch=1))  # warm-up
        start = time.perf_counter()
        pgd_attack(vlm, image, prompts, ["listen you stupid idiot"], settings)
        attack = time.perf_counter() - start
        target = [vlm.tokenizer("listen you stupid idiot", add_special_tokens=False)["input_ids"]] * args.batch
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(args.steps):
                target_loss(vlm, to_tensor(image), prompts, target, image)
        forward = time.perf_counter() - start
        print(f"{name}: {args.steps / attack:.1f} PGD steps/s (batch {args.batch}, including the final measurement "
              f"of the saved image), {args.steps / forward:.1f} plain forwards/s; step / forward = "
              f"{attack / forward:.2f}x")


if __name__ == "__main__":
    main()
