"""Token-level views of one steered answer: where, token by token and layer by layer, the steering acted.

`token_view` runs one teacher-forced pass over the prompt (image tokens included) and the steered answer,
with the steering applied exactly as steered generation applied it (the same `plan`, the same `steer_at`
positions, every layer seeing what earlier layers steered), and records at each steered layer the hidden
state arriving there. Greedy generation with a KV cache computes the same states token by token; the
pass checks this by re-predicting the answer (`reproduced`), so a view that does not match its answer says so.

`answer_diff` marks where the steered answer departs from the unsteered one, word by word.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import torch

from ..core.models import VLM, Item
from .rules import get_rule
from .steering import Steering, steer_layer, steered_positions
from .teacher_forcing import pack_responses


@dataclass
class TokenView:
    """Per token × steered layer: the projection on v̂, the adaptive rule's gate c and the push the steering gave."""

    tokens: list[str]  # each token's text (image placeholders numbered; a word the tokenizer lacks as written)
    segments: list[str]  # "image", "prompt" or "answer" per token
    layers: list[int]
    projection: torch.Tensor  # [layers, tokens]: h · v̂ of the hidden state arriving at the steering
    gate: torch.Tensor | None  # [layers, tokens]: clamp(cos(h - h̄, v), 0, 1) where the rule uses h̄, else None
    push: torch.Tensor  # [layers, tokens]: (steered h - h) · v̂, 0 where this position is not steered
    reproduced: tuple[int, int]  # (answer tokens the pass predicts as generated, answer tokens)
    settings: dict
    steered: list[bool] = field(default_factory=list)  # per token: the steering acted at this position
    norm: torch.Tensor | None = None  # [layers, tokens]: ‖h‖ of the state arriving at the steering
    logprob_change: list[float | None] = field(default_factory=list)  # answer tokens: log p steered − unsteered

    @property
    def relative_push(self) -> torch.Tensor:
        """The push as a share of the state's size, (steered h − h) · v̂ / ‖h‖: comparable across layers."""
        return self.push if self.norm is None else self.push / self.norm.clamp_min(1e-12)

    def decisive_tokens(self, threshold: float = 1.0, limit: int = 5) -> list[tuple[int, str, float]]:
        """(position, token, Δ log p) of the answer tokens the steering made most likely (Δ log p ≥ `threshold`,
        about e times likelier), largest first: where the steered answer was decided."""
        changed = [(i, self.tokens[i], v) for i, v in enumerate(self.logprob_change)
                   if v is not None and v >= threshold]
        return sorted(changed, key=lambda t: -t[2])[:limit]

    def steered_counts(self) -> dict[str, tuple[int, int]]:
        """Per segment (image, prompt, answer): (positions steered, positions)."""
        counts: dict[str, tuple[int, int]] = {}
        for segment, steered in zip(self.segments, self.steered):
            done, total = counts.get(segment, (0, 0))
            counts[segment] = (done + int(steered), total + 1)
        return counts

    @property
    def faithful(self) -> bool:
        """The pass re-predicts every answer token: its states are the ones generation had."""
        return self.reproduced[0] == self.reproduced[1]


def _as_written(vlm: VLM, item: Item, prompt_ids: list[int]) -> dict[int, str]:
    """Position -> the prompt's own text for tokens the tokenizer cannot spell (its unknown token, e.g. a chat
    template's role word outside a closed vocabulary); empty when the prompt's tokens cannot be aligned."""
    unknown = vlm.tokenizer.unk_token_id
    if unknown is None or unknown not in prompt_ids:
        return {}
    text = vlm.format_prompt(item[1], item[0] is not None)
    try:
        with vlm.lock:  # the tokenizer's state is shared by threads (VLM.token_ids)
            encoded = vlm.tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    except (NotImplementedError, TypeError, ValueError):  # a slow tokenizer has no offsets
        return {}
    image_id = vlm.image_token_id
    spans = [(t, span) for t, span in zip(encoded["input_ids"], encoded["offset_mapping"]) if t != image_id]
    positions = [i for i, t in enumerate(prompt_ids) if t != image_id]
    if [t for t, _ in spans] != [prompt_ids[i] for i in positions]:
        return {}
    return {i: text[a:b].strip() for i, (t, (a, b)) in zip(positions, spans) if t == unknown and text[a:b].strip()}


def _token_texts(vlm: VLM, ids: list[int], written: dict[int, str]) -> list[str]:
    image_id = vlm.image_token_id
    texts, images = [], 0
    for position, token in enumerate(ids):
        if token == image_id:
            images += 1
            texts.append(f"<image {images}>")
        else:
            texts.append(written.get(position) or vlm.tokenizer.decode([token]) or f"<{token}>")
    return texts


def token_view(vlm: VLM, item: Item, steering: Steering, answer_ids: list[int]) -> TokenView:
    """The view of `answer_ids` (the steered answer's generated tokens) for `item` under `steering`."""
    if not answer_ids:
        raise ValueError("the steered answer is empty: there is nothing to show token by token")
    packed, is_answer = pack_responses(vlm, [item], [answer_ids])
    keep = packed["attention_mask"][0].bool().cpu()  # batch of one: padding only where the answer is short
    is_answer = is_answer[0].cpu()
    plan = steering.plan(vlm)
    steered_here = steered_positions(steering.steer_at, is_answer[None])[0]
    mask = steered_here.to(vlm.input_device)[None, :, None]
    arriving: dict[int, torch.Tensor] = {}
    leaving: dict[int, torch.Tensor] = {}
    with vlm.lock, torch.no_grad():
        with vlm.nn.trace(**packed):
            for step in plan:
                layer = vlm.layers[step.layer]
                arriving[step.layer] = layer.output.save()
                layer.output = torch.where(mask, steer_layer(layer.output, step.parts, steering.mode), layer.output)
                leaving[step.layer] = layer.output.save()
            logits = vlm.nn.output.logits.save()
        plain_logits = vlm.hf_model(**packed).logits  # the same pass unsteered: what the steering changed
    predicted = logits[0, :-1].argmax(-1).cpu()[is_answer[1:]]
    target = packed["input_ids"][0].cpu()[is_answer]
    change = (_answer_logprobs(logits[0], packed["input_ids"][0]) - _answer_logprobs(plain_logits[0],
                                                                                     packed["input_ids"][0])).cpu()
    projections, gates, pushes, norms = [], [], [], []
    uses_gate = get_rule(steering.mode).needs_calibration  # the gate is shown only where the rule applies it
    for step in plan:
        h = arriving[step.layer][0].float().cpu()[keep]
        moved = leaving[step.layer][0].float().cpu()[keep] - h
        direction = sum((p.direction.float().cpu() for p in step.parts), torch.zeros(h.shape[-1]))
        unit = direction / direction.norm().clamp_min(1e-12)
        projections.append(h @ unit)
        pushes.append(moved @ unit)
        norms.append(h.norm(dim=-1))
        part = step.parts[0]
        if uses_gate and part.calibration is not None and len(step.parts) == 1:
            gates.append(torch.nn.functional.cosine_similarity(h - part.calibration.float().cpu(),
                                                               part.direction.float().cpu()[None], dim=-1).clamp(0, 1))
    ids = packed["input_ids"][0].cpu()[keep].tolist()
    answer = is_answer[keep]
    image_id = vlm.image_token_id
    segments = ["answer" if a else "image" if t == image_id else "prompt" for t, a in zip(ids, answer.tolist())]
    prompt_ids = [t for t, a in zip(ids, answer.tolist()) if not a]
    # change[j] scores token j + 1 (logits predict the next token); kept tokens are a prefix-free run of the row
    positions = keep.nonzero().flatten().tolist()
    logprob_change: list[float | None] = [float(change[p - 1]) if a and p > 0 else None
                                          for p, a in zip(positions, answer.tolist())]
    return TokenView(tokens=_token_texts(vlm, ids, _as_written(vlm, item, prompt_ids)), segments=segments,
                     layers=[s.layer for s in plan], projection=torch.stack(projections),
                     gate=torch.stack(gates) if len(gates) == len(plan) else None, push=torch.stack(pushes),
                     reproduced=(int((predicted == target).sum()), len(answer_ids)), settings=steering.describe(),
                     steered=steered_here[keep].tolist(), norm=torch.stack(norms), logprob_change=logprob_change)


def _answer_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[T-1]: log p(token t+1 | tokens ≤ t) of each next token under `logits` [T, V]."""
    logprobs = torch.log_softmax(logits[:-1].float(), -1)
    return logprobs.gather(1, ids[1:, None].to(logprobs.device)).squeeze(1)


def answer_diff(unsteered: str, steered: str) -> list[tuple[str, str | None]]:
    """The steered answer as (text, mark) pieces for a highlighted view: None where it says what the unsteered
    answer says, "added" where it departs; the unsteered words it dropped follow as "removed"."""
    before, after = unsteered.split(" "), steered.split(" ")
    pieces: list[tuple[str, str | None]] = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if op == "equal":
            pieces.append((" ".join(after[b0:b1]) + " ", None))
            continue
        if b1 > b0:
            pieces.append((" ".join(after[b0:b1]) + " ", "added"))
        if a1 > a0:
            pieces.append((" ".join(before[a0:a1]) + " ", "removed"))
    return pieces
