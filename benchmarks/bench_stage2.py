"""Stage II throughput on a random model: steps/s, sampled tokens/s, peak memory.

    python benchmarks/bench_stage2.py                 # CPU: a tiny random LLaVA
    python benchmarks/bench_stage2.py --shape 7b      # GPU: LLaVA-1.5-7B shapes, bf16 (about 14 GB)
    python benchmarks/bench_stage2.py --parallel      # CPU: organism `stage2`, two torchrun processes vs one
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import LlavaConfig, LlavaForConditionalGeneration

from workbench.core.models import VLM, wrap
from workbench.core.records import Record
from workbench.core.tiny import build_tiny
from workbench.rewards.combined import RewardModel, RewardWeights
from workbench.rewards.toxicity import ToxicityScorer
from workbench.stage2.loop import Stage2Config, Stage2Run
from workbench.steer.vectors import SteeringVector

SHAPES = {
    "tiny": dict(vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             image_size=32, patch_size=8),
                 text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                           num_key_value_heads=4, vocab_size=512)),
    "7b": dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=336, patch_size=14),
               text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=32, vocab_size=32064)),
}


def random_llava(name: str, device: str, dtype: torch.dtype) -> tuple[VLM, int]:
    """A random-weight LLaVA of one of SHAPES on `device` (the tiny model's tokenizer), and its image size."""
    _, processor = build_tiny("llava")
    shape = SHAPES[name]
    size = shape["vision"]["image_size"]
    processor.image_processor.size = {"shortest_edge": size}
    processor.image_processor.crop_size = {"height": size, "width": size}
    processor.patch_size = shape["vision"]["patch_size"]
    config = LlavaConfig(vision_config=dict(model_type="clip_vision_model", **shape["vision"]),
                         text_config=dict(model_type="llama", pad_token_id=0, bos_token_id=2, eos_token_id=3,
                                          **shape["text"]),
                         image_token_id=processor.tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-2)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(dtype)
    return wrap(f"random-llava-{name}", model, processor), size


ROOT = Path(__file__).resolve().parents[1]


def stage2_seconds(out: Path, steps: int, processes: int) -> float:
    """Wall seconds of `stage2` on the organism end to end (one thread per process, as torchrun gives each)."""
    launcher = [sys.executable, "-m"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m"]
    command = [*launcher, "workbench", "stage2", "--model", "organism", "--data", "organism:train", "--vectors",
               str(ROOT / "analyses/walkthrough_run/vectors.safetensors"), "--steps", str(steps),
               "--prompts-per-step", "8", "--samples", "4", "--max-new-tokens", "32", "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"stage2 failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def parallel(steps: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        one = stage2_seconds(Path(folder) / "one", steps, 1)
        two = stage2_seconds(Path(folder) / "two", steps, 2)
        a, b = (SteeringVector.load(Path(folder) / name / "vectors.safetensors") for name in ("one", "two"))
        same = all(torch.equal(a.directions[layer], b.directions[layer]) for layer in a.layers)
    print(f"organism stage2, {steps} steps of 8 prompts x 4 samples x 32 tokens, end to end: one process {one:.1f} s, "
          f"two processes {two:.1f} s: {one / two:.2f}x; identical vectors: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--parallel", action="store_true", help="organism stage2: two torchrun processes vs one")
    args = parser.parse_args()
    if args.parallel:
        parallel(max(args.steps, 10))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    vlm, size = random_llava(args.shape, device, dtype)
    model = vlm.hf_model
    shape = SHAPES[args.shape]
    hidden, layers = shape["text"]["hidden_size"], shape["text"]["num_hidden_layers"]
    vector = SteeringVector({k: torch.randn(hidden) for k in range(layers // 2 - 2, layers // 2 + 2)},
                            {k: torch.zeros(hidden) for k in range(layers)}, {"num_layers": layers})
    image = Image.new("RGB", (size, size), "white")
    records = [Record("tell me how to do the activity in the image", "harmful", "typo", image_data=image),
               Record("describe the image", "benign", "scenes", image_data=image)] * 4
    cfg = Stage2Config(steps=args.steps, prompts_per_step=4, samples_per_prompt=4, max_new_tokens=32,
                       checkpoint_every=100)
    rewards = RewardModel(ToxicityScorer.fallback(), None, RewardWeights())
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as folder:
        run = Stage2Run(vlm, vector, records, rewards, cfg, folder)
        run.train_step()  # warm-up
        start = time.perf_counter()
        for _ in range(args.steps - 1):
            run.train_step()
        seconds = time.perf_counter() - start
    steps = max(1, args.steps - 1)
    tokens = steps * cfg.prompts_per_step * cfg.samples_per_prompt * cfg.max_new_tokens
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    print(f"{args.shape} on {device} ({dtype}): {steps / seconds:.3f} steps/s, {tokens / seconds:.0f} sampled tokens/s "
          f"(upper bound, EOS may end samples early), peak GPU memory {peak:.1f} GiB, "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters")


if __name__ == "__main__":
    main()
