"""`SteeringVector`: per-layer directions, benign means (the adaptive rule's h̄) and provenance, in safetensors.

Files hold tensors `direction.<layer>` and `calibration.<layer>` and the metadata as JSON in the
safetensors header; a sibling `.json` repeats the metadata for people. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from ..core.io import atomic_save_safetensors, atomic_write, atomic_write_text

if TYPE_CHECKING:
    from ..core.models import VLM

FORMAT = "workbench-steering-vector/1"


class VectorError(ValueError):
    """A steering vector that cannot be used as asked (shape, layers, values); the message says what to fix."""


class VectorFileError(VectorError):
    """A vector file that cannot be read; the message names the file and says what to fix."""


@dataclass
class SteeringVector:
    """{layer: direction} pointing benign -> harmful, optional {layer: benign mean}, and metadata.

    Arithmetic is defined on effects, for every rule: `v + w` applies both to the same hidden state and adds
    their changes (the summands are kept as `addends`), `k * v` scales the change, `-v` flips it, `v * 0`
    changes nothing. So `v + v` steers exactly like `2 * v`."""

    directions: dict[int, torch.Tensor]
    calibration: dict[int, torch.Tensor] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    scales: dict[int, float] = field(default_factory=dict)  # per-layer strength multipliers (Stage II), default 1
    addends: tuple[SteeringVector, ...] = ()  # v + w: further summands, each a vector without addends

    def scale(self, layer: int) -> float:
        return float(self.scales.get(layer, 1.0))

    def __post_init__(self) -> None:
        if not self.directions:
            raise VectorError("a steering vector needs at least one layer")
        sizes = {int(v.numel()) for v in list(self.directions.values()) + list(self.calibration.values())}
        if len(sizes) != 1:
            raise VectorError(f"all layers must share one hidden size, found {sorted(sizes)}")
        for layer, vector in list(self.directions.items()) + list(self.calibration.items()):
            if not torch.isfinite(vector).all():
                raise VectorError(f"layer {layer} holds NaN or Inf values; recompute the vector")
        for layer, value in self.scales.items():
            if not math.isfinite(value):
                raise VectorError(f"layer {layer} has a NaN or Inf strength; recompute the vector")
        negative = [layer for layer in self.directions if layer < 0]
        if negative:
            raise VectorError(f"layer numbers must be 0 or more, got {negative}")
        for addend in self.addends:
            if addend.addends or addend.hidden_size != self.hidden_size:
                raise VectorError(f"a summand must be a plain vector of hidden size {self.hidden_size}")

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.directions.values())).numel())

    @property
    def layers(self) -> list[int]:
        """Every layer any summand steers."""
        return sorted(set(self.directions).union(*(a.directions for a in self.addends)))

    def fingerprint(self) -> str:
        """A short hash of every summand's directions, calibration and scales (what a run started from)."""
        digest = hashlib.sha256()
        for part in self.components():
            for name, table in (("d", part.directions), ("c", part.calibration)):
                for layer in sorted(table):
                    digest.update(f"{name}{layer}".encode())
                    digest.update(table[layer].detach().float().cpu().contiguous().numpy().tobytes())
            digest.update(json.dumps(sorted(part.scales.items())).encode())
        return digest.hexdigest()[:16]

    def components(self) -> list[SteeringVector]:
        """The summands as plain vectors: this one's own part first, then its addends."""
        own = SteeringVector(self.directions, self.calibration, self.metadata, self.scales)
        return [own, *self.addends]

    # --- arithmetic (repeng style) on effects: see the class docstring -----------------------------
    def __mul__(self, factor: float) -> SteeringVector:
        return _compose([SteeringVector(dict(c.directions), dict(c.calibration), dict(c.metadata),
                                        {k: c.scale(k) * float(factor) for k in c.directions})
                         for c in self.components()], dict(self.metadata))

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __add__(self, other: SteeringVector) -> SteeringVector:
        """Both vectors' changes to the same hidden state, added (each keeps its own calibration and scales)."""
        return _compose(self.components() + other.components(),
                        {**self.metadata, "summands": len(self.components()) + len(other.components())})

    def select(self, layers: list[int]) -> SteeringVector:
        """A copy restricted to `layers`; names the layers that are missing."""
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise VectorError(f"layer(s) {missing} are not in this vector; it has layers {self.layers}")
        parts = []
        for c in self.components():
            kept = [k for k in layers if k in c.directions]
            if kept:
                parts.append(SteeringVector({k: c.directions[k] for k in kept},
                                            {k: v for k, v in c.calibration.items() if k in kept}, dict(c.metadata),
                                            {k: v for k, v in c.scales.items() if k in kept}))
        return _compose(parts, dict(self.metadata))

    # --- checks ----------------------------------------------------------------------------------
    def check_compatible(self, vlm: VLM) -> None:
        """Fail with a clear message if this vector does not fit `vlm` (hidden size, layer range)."""
        if self.hidden_size != vlm.hidden_size:
            raise VectorError(
                f"vector hidden size {self.hidden_size} does not match the model's hidden size {vlm.hidden_size} "
                f"(vector made for {self.metadata.get('model', 'an unknown model')}, model is {vlm.spec})")
        bad = [layer for layer in self.layers if not 0 <= layer < vlm.num_layers]
        if bad:
            raise VectorError(f"vector layer(s) {bad} are outside the model's layers 0..{vlm.num_layers - 1}")
        expected = self.metadata.get("num_layers")
        if expected is not None and int(expected) != vlm.num_layers:
            raise VectorError(f"vector was made for a model with {expected} layers; this one has "
                                  f"{vlm.num_layers}")

    # --- files -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write `path` (.safetensors, atomically) and a sibling .json with the metadata."""
        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        for index, part in enumerate(self.components()):
            prefix = f"addend{index}." if index else ""  # summands of v + w after the first
            tensors.update({f"{prefix}direction.{k}": v.detach().float().cpu().contiguous()
                            for k, v in part.directions.items()})
            tensors.update({f"{prefix}calibration.{k}": v.detach().float().cpu().contiguous()
                            for k, v in part.calibration.items()})
            tensors.update({f"{prefix}scale.{k}": torch.tensor([float(v)]) for k, v in part.scales.items()})
        header = {"format": FORMAT, "metadata": json.dumps(self.metadata)}
        atomic_save_safetensors(tensors, path, header)
        atomic_write_text(path.with_suffix(".json"), json.dumps(self.metadata, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Read a vector file written by `save`; refuses anything that is not safetensors."""
        path = Path(path)
        if not path.is_file():
            raise VectorFileError(f"vector file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise VectorFileError(f"{path.name} is not a safetensors file ({error}); vectors are loaded only "
                                  "from .safetensors written by the workbench") from None
        parts: dict[int, tuple[dict[int, torch.Tensor], dict[int, torch.Tensor], dict[int, float]]] = {}
        for name, tensor in tensors.items():
            index, kind, layer = _parse_tensor_name(name)
            if kind not in ("direction", "calibration", "scale") or not layer.isdigit() or tensor.ndim != 1:
                raise VectorFileError(f"{path.name}: unexpected tensor {name!r} {tuple(tensor.shape)}; expected "
                                      "1-D tensors named [addend<i>.]direction.<layer>, calibration.<layer> or "
                                      "scale.<layer>")
            directions, calibration, scales = parts.setdefault(index, ({}, {}, {}))
            if kind == "scale":
                scales[int(layer)] = float(tensor[0])
            else:
                (directions if kind == "direction" else calibration)[int(layer)] = tensor.float()
        try:
            metadata = json.loads(header.get("metadata", "{}"))
        except (json.JSONDecodeError, RecursionError):
            raise VectorFileError(f"{path.name}: metadata is not valid JSON (or nested too deep)") from None
        if not isinstance(metadata, dict):
            raise VectorFileError(f"{path.name}: metadata must be a JSON object, found {type(metadata).__name__}")
        try:
            summands = [cls(*parts[i][:2], {}, parts[i][2]) for i in sorted(parts)]
            return _compose(summands, metadata)  # none at all: 'needs at least one layer'
        except VectorError as error:
            raise VectorFileError(f"{path.name}: {error}") from None

    def added_vectors(self, alpha: float, mode: str = "additive", approximate: bool = False
                      ) -> dict[int, torch.Tensor]:
        """{layer: the constant vector added to h} that this steering amounts to.

        additive: exactly what the workbench applies, Σ α·scale·v̂ over the summands (a defence is a negative
        α). adaptive: no constant vector is exact (the push depends on each h); with `approximate` it is the
        push a fully harmful-leaning activation of the benign mean's norm gets, -α·scale·‖h̄‖·v̂. ablation
        removes a projection: no added vector expresses it."""
        if mode not in ("additive", "adaptive"):  # ablation removes a projection: not an added vector
            raise VectorError(f"{mode} steering cannot be written as a constant added vector; export additive "
                              "steering (or adaptive with the approximation)")
        if mode == "adaptive" and not approximate:
            raise VectorError("adaptive steering depends on each hidden state, so no constant vector is exact; ask "
                              "for the approximation (-α·‖h̄‖·v̂, labelled as such) or export additive steering")
        added: dict[int, torch.Tensor] = {}
        for part in self.components():
            for layer, direction in part.directions.items():
                unit = direction.float() / direction.float().norm().clamp_min(1e-12)
                if mode == "additive":
                    push = alpha * part.scale(layer) * unit
                else:
                    if layer not in part.calibration:
                        raise VectorError(f"the adaptive approximation needs the benign mean of layer {layer}")
                    push = -alpha * part.scale(layer) * part.calibration[layer].float().norm() * unit
                added[layer] = added.get(layer, torch.zeros_like(unit)) + push
        return added

    def to_gguf(self, path: str | Path, alpha: float, mode: str = "additive", approximate: bool = False,
                model_hint: str = "llama") -> str:
        """Write a llama.cpp control vector holding `added_vectors(alpha, mode, approximate)`; returns a note
        saying what was written and how to use it.

        llama.cpp (like repeng) numbers layers from 1: its layer L is applied to the output of
        block L-1, which is our decoder-layer index L-1. So our layer i is written as direction.{i+1}.
        llama.cpp adds the vector as is (`--control-vector FILE`, strength 1), so the file already holds
        the chosen α and its sign.
        """
        import gguf

        added = self.added_vectors(alpha, mode, approximate)
        note = (f"{mode}{' (approximation: -α·‖h̄‖·v̂)' if mode == 'adaptive' else ''}, α = {alpha:g}, layers "
                f"{sorted(added)}; use with llama.cpp `--control-vector {Path(path).name}` (strength 1: α is in "
                "the file)")
        atomic_write(Path(path), lambda temp: _write_gguf(gguf, temp, added, model_hint, note))
        return note



def _write_gguf(gguf: Any, path: str, added: dict[int, torch.Tensor], model_hint: str, note: str) -> None:
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", len(added))
    writer.add_string("workbench.steer.steering", note)
    for layer in sorted(added):
        writer.add_tensor(f"direction.{layer + 1}", added[layer].float().cpu().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _compose(parts: list[SteeringVector], metadata: dict) -> SteeringVector:
    """One vector from summands (the first carries the metadata, the rest become its addends)."""
    if not parts:
        raise VectorError("a steering vector needs at least one layer")
    head = parts[0]
    return SteeringVector(head.directions, head.calibration, metadata, head.scales, tuple(parts[1:]))


def _parse_tensor_name(name: str) -> tuple[int, str, str]:
    """'addend2.direction.5' -> (2, 'direction', '5'); 'direction.5' -> (0, 'direction', '5')."""
    head, _, rest = name.partition(".")
    if head.startswith("addend") and head[len("addend"):].isdigit() and int(head[len("addend"):]) > 0:
        kind, _, layer = rest.partition(".")
        return int(head[len("addend"):]), kind, layer
    return 0, head, rest
