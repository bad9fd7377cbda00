"""A Stage II run folder: config.json, rewards.json, append-only metrics.jsonl, an atomic checkpoint
(steering parameters + optimiser state + step) and, at the end, vectors.safetensors.

One writer per folder: a new run refuses a folder that already holds one; `resume` checks that the
settings which shape training match the saved ones before loading anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..core.io import atomic_save_safetensors, atomic_write_text

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
VECTORS = "vectors.safetensors"


class Stage2Store:
    """Files of one Stage II run in `folder`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT

    def start(self, config: Mapping[str, Any], rewards: Mapping[str, Any], inputs: Mapping[str, str]) -> None:
        """A new run: refuse a folder that already holds one, then write config.json, rewards.json, inputs.json
        (what the data and the starting vectors hash to) and an empty metrics.jsonl."""
        if self.checkpoint.exists() or (self.folder / VECTORS).exists():
            raise FileExistsError(f"{self.folder} already holds a Stage II run; resume it to continue, "
                                  "or choose a new output folder (nothing was overwritten)")
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / "config.json", json.dumps(config, indent=2))
        atomic_write_text(self.folder / "rewards.json", json.dumps(rewards, indent=2))
        atomic_write_text(self.folder / "inputs.json", json.dumps(dict(inputs), indent=2))
        (self.folder / METRICS).write_text("")

    def can_resume(self) -> bool:
        return self.checkpoint.exists()

    def check_same_settings(self, config: Mapping[str, Any], defaults: Mapping[str, Any],
                            must_match: Sequence[str]) -> None:
        """Refuse to resume with settings that change what was being trained."""
        saved = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        changed = [k for k in must_match if saved.get(k, defaults.get(k)) != config.get(k)]  # old runs: defaults
        if changed:
            raise ValueError(f"cannot resume {self.folder}: {', '.join(changed)} differ from the saved run; "
                             "use the same settings or a new output folder")

    def check_same_inputs(self, inputs: Mapping[str, str]) -> None:
        """Refuse to resume on other data or from other vectors than the run started with."""
        path = self.folder / "inputs.json"
        if not path.is_file():
            return  # a run saved before inputs were recorded: nothing to compare against
        saved = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in saved if saved[k] != inputs.get(k)]
        if changed:
            raise ValueError(f"cannot resume {self.folder}: the {' and the '.join(changed)} differ from the ones it "
                             "started with; use them, or start a new run")

    def save_checkpoint(self, step: int, params: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Parameters, optimiser state and step, atomically (sampling is seeded by step: no RNG state needed)."""
        tensors = {f"param.{name}": p.detach().cpu().contiguous() for name, p in params.named_parameters()}
        names = [name for name, p in params.named_parameters() if p.requires_grad]
        for index, values in optimizer.state_dict()["state"].items():
            for key, value in values.items():
                if torch.is_tensor(value):
                    stored = value.detach().cpu()
                    tensors[f"optim.{names[index]}.{key}"] = (stored.reshape(-1) if value.ndim == 0 else stored
                                                              ).contiguous()
        atomic_save_safetensors(tensors, self.checkpoint, {"step": str(step)})

    def load_checkpoint(self, params: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
        """Restore parameters and optimiser state in place; drop metric lines logged past the checkpoint; the step."""
        tensors = load_file(str(self.checkpoint))
        with safe_open(str(self.checkpoint), framework="pt") as handle:
            step = int(handle.metadata()["step"])
        with torch.no_grad():
            for name, p in params.named_parameters():
                p.copy_(tensors[f"param.{name}"].to(p.device))
        names = [name for name, p in params.named_parameters() if p.requires_grad]
        state: dict[str, Any] = {"state": {}, "param_groups": optimizer.state_dict()["param_groups"]}
        for index, name in enumerate(names):
            entries = {k.split(".")[-1]: v for k, v in tensors.items() if k.startswith(f"optim.{name}.")}
            if entries:
                entries["step"] = entries["step"].reshape(())
                state["state"][index] = entries
        optimizer.load_state_dict(state)
        self._trim_metrics(step)
        return step

    def _trim_metrics(self, step: int) -> None:
        """Keep only metric lines up to the checkpoint's step (a killed run may have logged past it)."""
        kept = []
        for line in (self.folder / METRICS).read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                continue  # a line torn by the kill
        atomic_write_text(self.folder / METRICS, "".join(f"{line}\n" for line in kept))

    def append_metrics(self, row: Mapping[str, Any]) -> None:
        with open(self.folder / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(row)) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        """The logged rows (empty before the first step)."""
        path = self.folder / METRICS
        if not path.is_file():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # blank, or torn by a kill mid-write (resume drops it)
        return rows

    @property
    def vectors(self) -> Path:
        return self.folder / VECTORS
