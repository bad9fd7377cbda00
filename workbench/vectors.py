"""`SteeringVector`: per-layer directions, ASTRA calibration means and provenance, saved as safetensors.

Files hold tensors `direction.<layer>` and `calibration.<layer>` and the metadata as JSON in the
safetensors header; a sibling `.json` repeats the metadata for people. Nothing is unpickled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from .io import atomic_save_safetensors, atomic_write, atomic_write_text

if TYPE_CHECKING:
    from .models import VLM

FORMAT = "workbench-steering-vector/1"


class VectorError(ValueError):
    """A steering vector that cannot be used as asked (shape, layers, values); the message says what to fix."""


class VectorFileError(VectorError):
    """A vector file that cannot be read; the message names the file and says what to fix."""


@dataclass
class SteeringVector:
    """{layer: direction} pointing benign -> harmful, optional {layer: benign mean}, and metadata."""

    directions: dict[int, torch.Tensor]
    calibration: dict[int, torch.Tensor] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    scales: dict[int, float] = field(default_factory=dict)  # per-layer strength multipliers (Stage II), default 1

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

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.directions.values())).numel())

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    # --- arithmetic (repeng style): v * k scales the steering effect, -v flips it, v + w adds effects ---
    def __mul__(self, factor: float) -> SteeringVector:
        scales = {k: self.scale(k) * float(factor) for k in self.directions}
        return SteeringVector(dict(self.directions), dict(self.calibration), dict(self.metadata), scales)

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __add__(self, other: SteeringVector) -> SteeringVector:
        """Sum of the scaled directions per layer (strengths folded into the directions)."""
        zero = torch.zeros(self.hidden_size)
        summed = {k: self.directions.get(k, zero) * self.scale(k) + other.directions.get(k, zero) * other.scale(k)
                  for k in set(self.directions) | set(other.directions)}
        calibration = {**other.calibration, **self.calibration}
        return SteeringVector(summed, calibration, dict(self.metadata))

    def select(self, layers: list[int]) -> SteeringVector:
        """A copy restricted to `layers`; names the layers that are missing."""
        missing = [layer for layer in layers if layer not in self.directions]
        if missing:
            raise VectorError(f"layer(s) {missing} are not in this vector; it has layers {self.layers}")
        return SteeringVector({k: self.directions[k] for k in layers},
                              {k: v for k, v in self.calibration.items() if k in layers}, dict(self.metadata),
                              {k: v for k, v in self.scales.items() if k in layers})

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
        tensors = {f"direction.{k}": v.detach().float().cpu().contiguous() for k, v in self.directions.items()}
        tensors.update({f"calibration.{k}": v.detach().float().cpu().contiguous()
                        for k, v in self.calibration.items()})
        tensors.update({f"scale.{k}": torch.tensor([float(v)]) for k, v in self.scales.items()})
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
        directions: dict[int, torch.Tensor] = {}
        calibration: dict[int, torch.Tensor] = {}
        scales: dict[int, float] = {}
        for name, tensor in tensors.items():
            kind, _, layer = name.partition(".")
            if kind not in ("direction", "calibration", "scale") or not layer.isdigit() or tensor.ndim != 1:
                raise VectorFileError(f"{path.name}: unexpected tensor {name!r} {tuple(tensor.shape)}; expected "
                                      "1-D tensors named direction.<layer>, calibration.<layer> or scale.<layer>")
            if kind == "scale":
                scales[int(layer)] = float(tensor[0])
            else:
                (directions if kind == "direction" else calibration)[int(layer)] = tensor.float()
        try:
            metadata = json.loads(header.get("metadata", "{}"))
        except json.JSONDecodeError:
            raise VectorFileError(f"{path.name}: metadata is not valid JSON") from None
        try:
            return cls(directions, calibration, metadata, scales)
        except VectorError as error:
            raise VectorFileError(f"{path.name}: {error}") from None

    def to_gguf(self, path: str | Path, model_hint: str = "llama") -> None:
        """Write a llama.cpp control vector (`--control-vector`): F32 tensors `direction.<L>`.

        llama.cpp (like repeng) numbers layers from 1: its layer L is applied to the output of
        block L-1, which is our decoder-layer index L-1. So our layer i is written as direction.{i+1}.
        The sign is kept: llama.cpp adds the vector, so scale by a negative strength to defend.
        """
        import gguf

        atomic_write(Path(path), lambda temp: self._write_gguf(gguf, temp, model_hint))

    def _write_gguf(self, gguf, path: str, model_hint: str) -> None:
        writer = gguf.GGUFWriter(str(path), "controlvector")
        writer.add_string("controlvector.model_hint", model_hint)
        writer.add_uint32("controlvector.layer_count", len(self.directions))
        for layer in self.layers:  # llama.cpp adds the vector as is: fold the unit direction's scale in
            scaled = self.directions[layer] * self.scale(layer)
            writer.add_tensor(f"direction.{layer + 1}", scaled.float().cpu().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
