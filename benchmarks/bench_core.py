"""Overhead of nnsight steering and capture on a random LLaVA: ~60M parameters, or LLaVA-1.5-7B's shapes.

Prints ratios measured in one process, interleaving the runs (this machine is noisy):
  steered generate / plain generate   (32 new tokens, batch 4; target <= 1.03)
  all-layer capture / plain forward   (batch 4; target <= 1.05)
Run: python benchmarks/bench_core.py [--repeats N] [--device cuda] [--shape 7b]  (on CUDA in bf16; 7b needs CUDA)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from workbench.core.models import wrap
from workbench.core.tiny import build_tiny
from workbench.stage1.activations import capture_batch, position_weights
from workbench.steer.steering import Steering, _generate_ids
from workbench.steer.vectors import SteeringVector


def build_model() -> object:
    """A LLaVA with CLIP vision (4 layers, 256 wide) and a Llama text model (8 layers, 512 wide, 32k vocab)."""
    _, processor = build_tiny("llava")
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=256, intermediate_size=1024,
                           num_hidden_layers=4, num_attention_heads=4, image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=32000, hidden_size=512, intermediate_size=1536,
                         num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8, pad_token_id=0,
                         bos_token_id=2, eos_token_id=3),
        image_token_id=processor.tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    return wrap("bench:llava-60m", LlavaForConditionalGeneration(config), processor)


def hooked_generate(vlm, encoding, steering: Steering, generation: dict) -> torch.Tensor:
    """Reference point: the same steering with plain PyTorch forward hooks (no nnsight trace)."""
    from workbench.steer.steering import steer_layer

    handles = []
    for step in steering.plan(vlm):  # the same per-layer plan the nnsight path applies, moved once
        hook = (lambda s: lambda module, args, output: steer_layer(output, s.parts, steering.mode))(step)
        handles.append(vlm.layer_module(step.layer).register_forward_hook(hook))
    try:
        return vlm.hf_model.generate(**encoding, **generation)
    finally:
        for handle in handles:
            handle.remove()


def timed(fn, device: str) -> float:
    """Wall seconds of one call; on CUDA, waits for the queued kernels so they count."""
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", default="60m", choices=["60m", "7b"])
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    size = 32
    if args.shape == "7b":
        from bench_stage2 import random_llava  # same folder

        torch.manual_seed(0)
        vlm, size = random_llava("7b", args.device, torch.bfloat16 if args.device == "cuda" else torch.float32)
    else:
        vlm = build_model()
        if args.device == "cuda":
            vlm.hf_model.to("cuda", torch.bfloat16)
    params = sum(p.numel() for p in vlm.hf_model.parameters()) / 1e6
    from PIL import Image

    items = [(Image.new("RGB", (size, size), c), f"describe the picture number {i} please")
             for i, c in enumerate(["red", "green", "blue", "white"])]
    encoding = vlm.encode(items)
    generation = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0)
    generator = torch.Generator().manual_seed(0)
    vector = SteeringVector({i: torch.randn(vlm.hidden_size, generator=generator) for i in range(vlm.num_layers)},
                            {i: torch.zeros(vlm.hidden_size) for i in range(vlm.num_layers)})
    one_layer = Steering(vector, "adaptive", 0.5, layers=(vlm.num_layers // 2,))
    all_layers = Steering(vector, "adaptive", 0.5)
    weights = position_weights(vlm, encoding, "last")
    runs = {
        "plain generate": lambda: _generate_ids(vlm, encoding, None, generation),
        "steered generate (1 layer)": lambda: _generate_ids(vlm, encoding, one_layer, generation),
        "steered generate (all layers)": lambda: _generate_ids(vlm, encoding, all_layers, generation),
        "hook-steered generate (1 layer)": lambda: hooked_generate(vlm, encoding, one_layer, generation),
        "hook-steered generate (all layers)": lambda: hooked_generate(vlm, encoding, all_layers, generation),
        "plain forward": lambda: vlm.hf_model(**encoding),
        "all-layer capture": lambda: capture_batch(vlm, encoding, weights),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn, args.device))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"model: random LLaVA ({args.shape}), {params:.1f}M parameters, batch 4, {args.device} "
          f"({'bf16' if args.device == 'cuda' else f'fp32, {torch.get_num_threads()} threads'}), "
          f"{args.repeats} interleaved repeats (median)")
    for name, value in median.items():
        print(f"  {name:<36} {value * 1000:8.1f} ms")
    print(f"ratio steered/plain generate, 1 layer : "
          f"{median['steered generate (1 layer)'] / median['plain generate']:.3f} (target <= 1.03)")
    print(f"ratio steered/plain generate, all layers: "
          f"{median['steered generate (all layers)'] / median['plain generate']:.3f}")
    print(f"ratio plain-hook steered/plain, 1 layer: "
          f"{median['hook-steered generate (1 layer)'] / median['plain generate']:.3f} (reference, no nnsight)")
    print(f"ratio plain-hook steered/plain, all layers: "
          f"{median['hook-steered generate (all layers)'] / median['plain generate']:.3f} (reference, no nnsight)")
    print(f"ratio all-layer capture/plain forward : {median['all-layer capture'] / median['plain forward']:.3f}"
          " (target <= 1.05)")


if __name__ == "__main__":
    main()
