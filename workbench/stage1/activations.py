"""Record every decoder layer's residual output at one position per prompt, batch by batch, through nnsight.

Layer convention: index i is the output of decoder layer i (the residual stream after block i), so
it equals `output_hidden_states[i + 1]` for every layer but the last, where Hugging Face reports the
final-norm output instead. Each layer is reduced to [B, H] inside the trace, so [B, T, H] is never
kept for all layers at once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file

from ..core.distributed import SINGLE, Shard
from ..core.io import atomic_save_safetensors, atomic_write_text
from ..core.models import VLM, batches_by_modality
from ..core.progress import ProgressFn, track
from ..core.records import Record, dataset_hash, record_key
from ..core.tracing import nnsight

Position = Literal["last", "mean_text", "mean_image"]
POSITIONS: tuple[str, ...] = ("last", "mean_text", "mean_image")
LAYER_CONVENTION = "decoder_layer_output"  # index i = output of decoder layer i (0-based)


@dataclass
class Activations:
    """[N, layers, hidden] float32 activations with each record's label, source and prompt."""

    values: torch.Tensor
    labels: list[str]
    sources: list[str]
    prompts: list[str]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.values.ndim != 3 or self.values.shape[0] != len(self.labels):
            raise ValueError(f"activations {tuple(self.values.shape)} do not match {len(self.labels)} labels")

    @property
    def num_layers(self) -> int:
        return int(self.values.shape[1])

    def mask(self, label: str | None = None, source: str | None = None) -> torch.Tensor:
        """Boolean row mask for a label and/or source."""
        keep = torch.ones(len(self.labels), dtype=torch.bool)
        if label is not None:
            keep &= torch.tensor([x == label for x in self.labels])
        if source is not None:
            keep &= torch.tensor([x == source for x in self.sources])
        return keep

    def save(self, path: str | Path) -> None:
        """Write `path` (.safetensors) and a sibling .json with labels, sources, prompts and metadata."""
        path = Path(path)
        atomic_save_safetensors({"activations": self.values.contiguous()}, path, {"format": "workbench-activations"})
        sidecar = dict(labels=self.labels, sources=self.sources, prompts=self.prompts, metadata=self.metadata)
        atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar))

    @classmethod
    def load(cls, path: str | Path) -> Activations:
        path = Path(path)
        values = load_file(str(path))["activations"]
        sidecar = json.loads(path.with_suffix(".json").read_text())
        return cls(values=values, labels=sidecar["labels"], sources=sidecar["sources"], prompts=sidecar["prompts"],
                   metadata=sidecar.get("metadata", {}))


def position_weights(vlm: VLM, encoding: dict[str, torch.Tensor], position: Position) -> torch.Tensor:
    """[B, T] weights that pick or average the positions to record (rows sum to 1)."""
    attention = encoding["attention_mask"].bool()
    if position == "last":
        last = attention.shape[1] - 1 - attention.flip(1).int().argmax(1)  # last attended token, any padding side
        weights = torch.zeros_like(attention, dtype=torch.float32)
        weights[torch.arange(len(last)), last] = 1.0
        return weights
    image_id = vlm.image_token_id
    is_image = encoding["input_ids"] == image_id if image_id is not None else torch.zeros_like(attention)
    if position == "mean_text":
        chosen = attention & ~is_image
    elif position == "mean_image":
        chosen = attention & is_image
        if not bool(chosen.any(1).all()):
            raise ValueError("position mean_image needs an image in every record; use 'last' or 'mean_text' "
                             "for text-only records")
    else:
        raise ValueError(f"unknown position {position!r}; use one of {', '.join(POSITIONS)}")
    chosen = chosen.float()
    return chosen / chosen.sum(1, keepdim=True).clamp_min(1.0)


def capture_batch(vlm: VLM, encoding: dict[str, torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """One traced forward: [B, layers, hidden] float32 on CPU, each layer reduced by `weights` in the trace."""
    weights = weights.to(vlm.input_device)
    pooled: list[torch.Tensor] = []
    with vlm.lock, torch.no_grad():
        with vlm.nn.trace(**encoding) as tracer:
            for layer in vlm.layers:
                hidden = layer.output
                w = weights.to(hidden.device, torch.float32)
                pooled.append(torch.einsum("bt,bth->bh", w, hidden.float()))  # stays on the device: no sync
            nnsight.save(pooled)
            tracer.stop()  # nothing after the last decoder layer is needed
    return torch.stack([p.to(pooled[0].device) for p in pooled], dim=1).cpu()  # one copy to the host, not one per layer


def capture(vlm: VLM, records: Sequence[Record], position: Position = "last", batch_size: int = 8,
            progress: ProgressFn | None = None, cancel: threading.Event | None = None,
            show_bar: bool = True, shard: Shard = SINGLE) -> Activations:
    """Activations of every decoder layer at `position` for each record, in record order. Under torchrun,
    `shard` captures every world-th record here and the rows of all processes are merged by index."""
    if not records:
        raise ValueError("no records to capture")
    if position not in POSITIONS:
        raise ValueError(f"unknown position {position!r}; use one of {', '.join(POSITIONS)}")
    mine = [i for i in range(len(records)) if shard.owns(i)]
    batches = [[mine[j] for j in batch] for batch in batches_by_modality([records[i].has_image for i in mine],
                                                                          batch_size)]
    values = torch.empty(len(records), vlm.num_layers, vlm.hidden_size)
    for indices in track(batches, len(batches), "capturing activations", progress, cancel, show_bar):
        encoding = vlm.encode([records[i].item for i in indices])
        values[indices] = capture_batch(vlm, encoding, position_weights(vlm, encoding, position))
    if shard.world > 1:
        for indices, rows in shard.gather((mine, values[mine])):
            values[indices] = rows
    metadata = dict(model=vlm.spec, position=position, layer_convention=LAYER_CONVENTION,
                    num_layers=vlm.num_layers, hidden_size=vlm.hidden_size, dataset_hash=dataset_hash(records),
                    training_records=sorted({record_key(r) for r in records}),  # for evaluation's leakage guard
                    training_behaviors=sorted({r.behavior for r in records if r.label == "harmful" and r.behavior}))
    return Activations(values=values, labels=[r.label for r in records], sources=[r.source for r in records],
                       prompts=[r.prompt for r in records], metadata=metadata)
