"""How inputs are grouped for generation: one modality per batch, similar lengths together, batches sized to fit.

Every generating path (eval, compare, sweep, Stage II sampling, the organism check) goes through
`steering.generate_ids`, which plans its batches here. Length-bucketing sorts each modality's inputs by
prompt length (stable, so equal lengths keep their order) before cutting batches: a batch then pads to
about its own length rather than to the dataset's longest prompt. Outputs come back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..core.models import VLM

AUTO = "auto"
CPU_BATCH = 32  # on 2-4 cores the organism's records/s stop rising near here (benchmarks/bench_eval.py)
MAX_AUTO_BATCH = 256
GPU_MEMORY_SHARE = 0.5  # of the free memory, for the KV cache and activations of one batch


def prompt_lengths(vlm: VLM, prompts: Sequence[str]) -> list[int]:
    """Token count of each prompt's text (the image adds the same count to every image prompt of a model)."""
    return [len(vlm.token_ids(prompt)) for prompt in prompts]


def length_batches(has_image: Sequence[bool], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches of at most `batch_size`, each all-image or all-text, each of inputs of similar length."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if len(has_image) != len(lengths):
        raise ValueError(f"{len(has_image)} inputs but {len(lengths)} lengths")
    batches: list[list[int]] = []
    for modality in (True, False):
        group = sorted((i for i, image in enumerate(has_image) if image == modality), key=lambda i: lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    return batches


def auto_batch_size(vlm: VLM, max_new_tokens: int = 48, prompt_tokens: int = 700) -> int:
    """A batch size that fits: CPU_BATCH on a CPU; on a GPU, as many sequences as half the free memory holds
    (KV cache plus one layer's activations per sequence of `prompt_tokens` + `max_new_tokens`), at most
    MAX_AUTO_BATCH. `--batch-size N` overrides it."""
    device = vlm.input_device
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    config: Any = vlm.hf_model.config
    text = getattr(config, "text_config", config)
    hidden = int(getattr(text, "hidden_size", 4096))
    layers = int(getattr(text, "num_hidden_layers", 32))
    heads = int(getattr(text, "num_attention_heads", 32))
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    width = torch.finfo(vlm.dtype).bits // 8 if vlm.dtype.is_floating_point else 4
    tokens = prompt_tokens + max_new_tokens
    kv_cache = 2 * layers * tokens * hidden * kv_heads // heads * width
    activations = tokens * hidden * 16 * width  # one layer's MLP and attention temporaries
    per_sequence = kv_cache + activations
    return max(1, min(MAX_AUTO_BATCH, int(free * GPU_MEMORY_SHARE // per_sequence)))


def resolve_batch_size(vlm: VLM, batch_size: int | str | None, max_new_tokens: int = 48) -> int:
    """`batch_size` as an int: a positive int stays, None or "auto" becomes `auto_batch_size`."""
    if batch_size is None or batch_size == AUTO:
        return auto_batch_size(vlm, max_new_tokens)
    if isinstance(batch_size, str):
        if not batch_size.isdigit():
            raise ValueError(f"batch size must be a positive whole number or 'auto', got {batch_size!r}")
        batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    return batch_size
