"""Overhead of nnsight steering and capture on a ~60M-parameter random LLaVA-shaped model.

Prints ratios measured in one process, interleaving the runs (this machine is noisy):
  steered generate / plain generate   (32 new tokens, batch 4; target <= 1.03)
  all-layer capture / plain forward   (batch 4; target <= 1.05)
Run: python benchmarks/bench_core.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from workbench.activations import capture_batch, position_weights
from workbench.models import wrap
from workbench.steering import Steering, _generate_ids
from workbench.tiny import build_tiny
from workbench.vectors import SteeringVector


def build_model() -> "object":
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
    from workbench.steering import steer_hidden

    handles = []
    for layer in steering.active_layers:
        direction, calibration = steering.vector.directions[layer], steering.vector.calibration.get(layer)
        hook = (lambda d, c: lambda module, args, output: steer_hidden(output, d, steering.mode, steering.alpha, c))(
            direction, calibration)
        handles.append(vlm.layer_module(layer).register_forward_hook(hook))
    try:
        return vlm.hf_model.generate(**encoding, **generation)
    finally:
        for handle in handles:
            handle.remove()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    vlm = build_model()
    params = sum(p.numel() for p in vlm.hf_model.parameters()) / 1e6
    from PIL import Image

    items = [(Image.new("RGB", (32, 32), c), f"describe the picture number {i} please")
             for i, c in enumerate(["red", "green", "blue", "white"])]
    encoding = vlm.encode(items)
    generation = dict(max_new_tokens=32, min_new_tokens=32, do_sample=False, pad_token_id=0)
    generator = torch.Generator().manual_seed(0)
    vector = SteeringVector({i: torch.randn(vlm.hidden_size, generator=generator) for i in range(vlm.num_layers)},
                            {i: torch.zeros(vlm.hidden_size) for i in range(vlm.num_layers)})
    one_layer = Steering(vector, "adaptive", 0.5, layers=(4,))
    all_layers = Steering(vector, "adaptive", 0.5)
    weights = position_weights(vlm, encoding, "last")
    runs = {
        "plain generate": lambda: _generate_ids(vlm, encoding, None, generation),
        "steered generate (1 layer)": lambda: _generate_ids(vlm, encoding, one_layer, generation),
        "steered generate (8 layers)": lambda: _generate_ids(vlm, encoding, all_layers, generation),
        "hook-steered generate (1 layer)": lambda: hooked_generate(vlm, encoding, one_layer, generation),
        "plain forward": lambda: vlm.hf_model(**encoding),
        "all-layer capture": lambda: capture_batch(vlm, encoding, weights),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                times[name].append(timed(fn))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"model: random LLaVA, {params:.1f}M parameters, batch 4, CPU threads {torch.get_num_threads()}, "
          f"{args.repeats} interleaved repeats (median)")
    for name, value in median.items():
        print(f"  {name:<30} {value * 1000:8.1f} ms")
    print(f"ratio steered/plain generate, 1 layer : {median['steered generate (1 layer)'] / median['plain generate']:.3f}"
          " (target <= 1.03)")
    print(f"ratio steered/plain generate, 8 layers: {median['steered generate (8 layers)'] / median['plain generate']:.3f}")
    print(f"ratio plain-hook steered/plain, 1 layer: "
          f"{median['hook-steered generate (1 layer)'] / median['plain generate']:.3f} (reference, no nnsight)")
    print(f"ratio all-layer capture/plain forward : {median['all-layer capture'] / median['plain forward']:.3f}"
          " (target <= 1.05)")


if __name__ == "__main__":
    main()
