"""Teacher forcing under steering: (prompt, response) packed into one batch and its sequence log-likelihood.

`sequence_logprobs` runs (prompt, response) through an nnsight trace with the steering attached (a `Steering` or
Stage II's trainable twin), so gradients reach its parameters; the model itself stays frozen. Stage II's
objectives and the playground's token view both read answers this way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..core.models import VLM, Item, batches_by_modality
from .steering import Steerer, steered_logits, steered_positions

LOGPROB_BATCH = 16  # (prompt, response) pairs per teacher-forced pass

_MROPE_TYPES = {"qwen2_vl", "qwen2_5_vl"}  # compute their own 3-D positions from the attention mask
_PER_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


def pack_responses(vlm: VLM, items: Sequence[Item], responses: Sequence[Sequence[int]]
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One left-padded batch of prompt + response tokens and a [B, T] mask of the response tokens.

    Prompts are encoded by the processor (images included); response token ids are appended, then
    every row is left-aligned again so padding only precedes the text, as during generation.
    """
    encoding = vlm.encode(items)
    batch, width = len(items), max(len(r) for r in responses) if responses else 0
    pad = vlm.tokenizer.pad_token_id
    extra = {"input_ids": torch.full((batch, width), pad),
             "attention_mask": torch.zeros(batch, width, dtype=torch.long)}
    for row, ids in enumerate(responses):
        extra["input_ids"][row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        extra["attention_mask"][row, :len(ids)] = 1
    prompt_mask = encoding["attention_mask"].cpu()  # the bookkeeping runs on the CPU, the model wherever it is
    is_response = torch.cat([torch.zeros_like(prompt_mask), extra["attention_mask"]], 1).bool()
    mask = torch.cat([prompt_mask, extra["attention_mask"]], 1)
    order = torch.argsort(mask, dim=1, stable=True)  # pads (0) first, then real tokens in their order
    packed = dict(encoding)
    for key in _PER_TOKEN_KEYS:
        if key in encoding:
            tail = extra.get(key, torch.zeros(batch, width, dtype=encoding[key].dtype))
            full = torch.cat([encoding[key].cpu(), tail.to(encoding[key].dtype)], 1)
            packed[key] = torch.gather(full, 1, order).to(encoding[key].device)
    if vlm.model_type not in _MROPE_TYPES:
        packed["position_ids"] = (packed["attention_mask"].cumsum(1) - 1).clamp_min(0)
    return packed, torch.gather(is_response, 1, order)


def sequence_logprobs(vlm: VLM, packed: dict[str, torch.Tensor], response_mask: torch.Tensor,
                      steering: Steerer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of response-token log-probs [B], response lengths [B]); unsteered when `steering` is None."""
    if steering is not None:
        logits = steered_logits(vlm, packed, steering, steered_positions(steering.steer_at, response_mask))
    else:
        with vlm.lock:
            logits = vlm.hf_model(**packed).logits
    targets = packed["input_ids"][:, 1:]
    mask = response_mask[:, 1:].to(logits.device)
    token_logprobs = torch.gather(F.log_softmax(logits[:, :-1].float(), -1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logprobs * mask).sum(1), mask.sum(1)


def response_logprobs(vlm: VLM, items: Sequence[Item], responses: Sequence[Sequence[int]],
                      steering: Steerer | None = None, batch_size: int = LOGPROB_BATCH
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """`sequence_logprobs` for any mix of image and text-only items, in order (batched by modality)."""
    totals: list[torch.Tensor | None] = [None] * len(items)
    lengths: list[torch.Tensor | None] = [None] * len(items)
    for indices in batches_by_modality(items, batch_size):
        packed, mask = pack_responses(vlm, [items[i] for i in indices], [responses[i] for i in indices])
        total, length = sequence_logprobs(vlm, packed, mask, steering)
        for row, index in enumerate(indices):
            totals[index], lengths[index] = total[row], length[row]
    return torch.stack(totals), torch.stack(lengths)  # type: ignore[arg-type]
