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
from dataclasses import dataclass

import torch

from ..core.models import VLM, Item
from .rules import get_rule
from .steering import Steering, steer_layer, steered_positions
from .teacher_forcing import pack_responses


@dataclass
class TokenView:
    """Per token × steered layer: the projection on v̂, the adaptive rule's gate c and the push the steering gave."""

    tokens: list[str]  # each token's text (image placeholders numbered)
    segments: list[str]  # "image", "prompt" or "answer" per token
    layers: list[int]
    projection: torch.Tensor  # [layers, tokens]: h · v̂ of the hidden state arriving at the steering
    gate: torch.Tensor | None  # [layers, tokens]: clamp(cos(h - h̄, v), 0, 1) where the rule uses h̄, else None
    push: torch.Tensor  # [layers, tokens]: (steered h - h) · v̂, 0 where this position is not steered
    reproduced: tuple[int, int]  # (answer tokens the pass predicts as generated, answer tokens)
    settings: dict

    @property
    def faithful(self) -> bool:
        """The pass re-predicts every answer token: its states are the ones generation had."""
        return self.reproduced[0] == self.reproduced[1]


def _token_texts(vlm: VLM, ids: list[int]) -> list[str]:
    image_id = vlm.image_token_id
    texts, images = [], 0
    for token in ids:
        if token == image_id:
            images += 1
            texts.append(f"<image {images}>")
        else:
            texts.append(vlm.tokenizer.decode([token]) or f"<{token}>")
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
    predicted = logits[0, :-1].argmax(-1).cpu()[is_answer[1:]]
    target = packed["input_ids"][0].cpu()[is_answer]
    projections, gates, pushes = [], [], []
    uses_gate = get_rule(steering.mode).needs_calibration  # the gate is shown only where the rule applies it
    for step in plan:
        h = arriving[step.layer][0].float().cpu()[keep]
        moved = leaving[step.layer][0].float().cpu()[keep] - h
        direction = sum((p.direction.float().cpu() for p in step.parts), torch.zeros(h.shape[-1]))
        unit = direction / direction.norm().clamp_min(1e-12)
        projections.append(h @ unit)
        pushes.append(moved @ unit)
        part = step.parts[0]
        if uses_gate and part.calibration is not None and len(step.parts) == 1:
            gates.append(torch.nn.functional.cosine_similarity(h - part.calibration.float().cpu(),
                                                               part.direction.float().cpu()[None], dim=-1).clamp(0, 1))
    ids = packed["input_ids"][0].cpu()[keep].tolist()
    answer = is_answer[keep]
    image_id = vlm.image_token_id
    segments = ["answer" if a else "image" if t == image_id else "prompt" for t, a in zip(ids, answer.tolist())]
    return TokenView(tokens=_token_texts(vlm, ids), segments=segments, layers=[s.layer for s in plan],
                     projection=torch.stack(projections), gate=torch.stack(gates) if len(gates) == len(plan) else None,
                     push=torch.stack(pushes), reproduced=(int((predicted == target).sum()), len(answer_ids)),
                     settings=steering.describe())


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
