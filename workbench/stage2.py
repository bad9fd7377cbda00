"""Stage II: refine steering vectors by sequence-level preference optimisation, the VLM frozen.

Each step samples K responses per prompt under the current steering, scores them (toxicity, visual
consistency, refusal, fluency: see rewards/combined.py), pairs best against worst, and minimises
the DPO loss on teacher-forced sequence log-likelihoods against a frozen reference (the Stage I
steering, or the unsteered model). Only the per-layer directions (and optionally per-layer
strengths) are trained. A run folder holds config.json, metrics.jsonl, an atomic checkpoint and,
at the end, vectors.safetensors; `resume=True` continues from the checkpoint.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file

from .data import Record
from .io import atomic_save_safetensors, atomic_write_text
from .models import VLM
from .preference import dpo_loss, group_advantages, preference_pairs, preference_pairs_all, response_logprobs
from .progress import Cancelled, ProgressFn
from .rewards.combined import RewardModel, RewardWeights
from .steering import Mode, Steering, generate_ids
from .vectors import SteeringVector

CONFIG_FIELDS_THAT_MUST_MATCH = ("mode", "layers", "objective", "pairing", "reference", "train_strength", "seed",
                                 "prompts_per_step", "samples_per_prompt", "advantage_norm")


@dataclass
class Stage2Config:
    steps: int = 40
    prompts_per_step: int = 8
    samples_per_prompt: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 48
    beta: float = 0.5
    learning_rate: float = 0.05
    objective: str = "dpo"  # dpo | grpo (advantage-weighted log-likelihood)
    reference: str = "initial"  # initial: the Stage I steering, frozen | unsteered
    mode: Mode = "adaptive"
    alpha: float = 1.0
    layers: list[int] | None = None
    train_strength: bool = True
    checkpoint_every: int = 5
    seed: int = 0
    weights: RewardWeights = field(default_factory=RewardWeights)
    # Off-policy option: a safe reply (e.g. the model's own text-route refusal) put in place of the K-th
    # sample for harmful prompts, so a pair can prefer a refusal the steered model never samples itself.
    # None keeps Stage II strictly on-policy. Logged metrics cover the sampled responses only.
    safe_response: str | None = None
    pairing: str = "best_worst"  # best_worst: one pair per prompt | best_all: best against every worse sample
    advantage_norm: str = "none"  # grpo: none (reward minus group mean) | std (also divided by the group's spread)

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):
            self.weights = RewardWeights(**self.weights)
        problems = []
        if self.steps < 1:
            problems.append(f"steps must be at least 1 (got {self.steps})")
        if self.samples_per_prompt < 2:
            problems.append(f"samples per prompt (K) must be at least 2 to form pairs (got {self.samples_per_prompt})")
        if self.prompts_per_step < 1:
            problems.append(f"prompts per step must be at least 1 (got {self.prompts_per_step})")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            problems.append(f"temperature must be positive (got {self.temperature})")
        if self.pairing not in ("best_worst", "best_all"):
            problems.append(f"pairing must be best_worst or best_all (got {self.pairing!r})")
        if self.advantage_norm not in ("none", "std"):
            problems.append(f"advantage normalisation must be none or std (got {self.advantage_norm!r})")
        if self.objective not in ("dpo", "grpo"):
            problems.append(f"objective must be dpo or grpo (got {self.objective!r})")
        if self.reference not in ("initial", "unsteered"):
            problems.append(f"reference must be initial or unsteered (got {self.reference!r})")
        if not (0 < self.learning_rate < 10):
            problems.append(f"learning rate must be in (0, 10) (got {self.learning_rate})")
        if problems:
            raise ValueError("; ".join(problems))


class SteeringParameters(torch.nn.Module):
    """The only trainable tensors: one direction per layer and, optionally, one log-strength per layer."""

    def __init__(self, vector: SteeringVector, layers: Sequence[int], alpha: float, train_strength: bool) -> None:
        super().__init__()
        self.layers = list(layers)
        self.alpha = alpha
        self.directions = torch.nn.ParameterDict(
            {str(k): torch.nn.Parameter(vector.directions[k].detach().float().clone()) for k in self.layers})
        initial = torch.tensor([max(abs(vector.scale(k)), 1e-3) for k in self.layers]).log()
        self.log_strength = torch.nn.Parameter(initial, requires_grad=train_strength)
        self.signs = {k: (1.0 if vector.scale(k) >= 0 else -1.0) for k in self.layers}

    def alphas(self) -> dict[int, torch.Tensor]:
        return {k: self.alpha * self.signs[k] * self.log_strength[i].exp() for i, k in enumerate(self.layers)}

    def directions_by_layer(self) -> dict[int, torch.Tensor]:
        return {k: self.directions[str(k)] for k in self.layers}

    def to_vector(self, base: SteeringVector, metadata: dict) -> SteeringVector:
        """The current parameters as a SteeringVector on the CPU (like a loaded one), wherever training runs."""
        scales = {k: self.signs[k] * float(self.log_strength[i].detach().exp()) for i, k in enumerate(self.layers)}
        return SteeringVector({k: p.detach().cpu().clone() for k, p in self.directions_by_layer().items()},
                              {k: base.calibration[k] for k in self.layers if k in base.calibration},
                              {**base.metadata, **metadata}, scales)


@dataclass
class StepMetrics:
    step: int
    loss: float
    pairs: int
    margin: float
    reward: float
    toxicity: float
    visual_consistency: float
    refusal_rate: float
    fluency: float
    seconds: float
    reward_harmful: float
    reward_benign: float


def _fluency(vlm: VLM, items, responses: list[list[int]]) -> list[float]:
    """exp(mean token log-prob) of each response under the unsteered model (0 for empty responses)."""
    safe = [r if r else [vlm.tokenizer.eos_token_id] for r in responses]
    with torch.no_grad():
        total, length = response_logprobs(vlm, items, safe)
    return [float((t / n.clamp_min(1)).exp()) if r else 0.0 for t, n, r in zip(total, length, responses)]


class Stage2Run:
    """One refinement run in `out_dir`; `run()` trains, checkpoints and writes the final vectors."""

    def __init__(self, vlm: VLM, vector: SteeringVector, records: Sequence[Record], rewards: RewardModel,
                 config: Stage2Config, out_dir: str | Path, resume: bool = False) -> None:
        vector.check_compatible(vlm)
        if not records:
            raise ValueError("Stage II needs records (harmful and benign prompts)")
        self.vlm, self.base, self.records, self.rewards, self.config = vlm, vector, list(records), rewards, config
        self.out = Path(out_dir)
        layers = config.layers if config.layers is not None else vector.layers
        vector.select(list(layers))  # names missing layers
        self.params = SteeringParameters(vector, layers, config.alpha, config.train_strength)
        device = next(vlm.layer_module(layers[0]).parameters()).device
        self.params.to(device)
        self.reference = {k: v.detach().clone() for k, v in self.params.directions_by_layer().items()}
        self.reference_alphas = {k: v.detach().clone() for k, v in self.params.alphas().items()}
        trainable = [p for p in self.params.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=config.learning_rate)
        self.step = 0
        self._prepare_folder(resume)

    # --- files -------------------------------------------------------------------------------------
    def _prepare_folder(self, resume: bool) -> None:
        checkpoint = self.out / "checkpoint.safetensors"
        config_json = json.dumps(asdict(self.config), indent=2)
        if resume and checkpoint.exists():
            saved = json.loads((self.out / "config.json").read_text())
            defaults = asdict(Stage2Config())  # a run saved before a field existed used its default
            changed = [k for k in CONFIG_FIELDS_THAT_MUST_MATCH
                       if saved.get(k, defaults.get(k)) != asdict(self.config).get(k)]
            if changed:
                raise ValueError(f"cannot resume {self.out}: {', '.join(changed)} differ from the saved run; "
                                 "use the same settings or a new --out folder")
            self._load_checkpoint(checkpoint)
            return
        if checkpoint.exists() or (self.out / "vectors.safetensors").exists():
            raise FileExistsError(f"{self.out} already holds a Stage II run; pass resume to continue it, "
                                  "or choose a new output folder (nothing was overwritten)")
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.json", config_json)
        atomic_write_text(self.out / "rewards.json", json.dumps(self.rewards.describe(), indent=2))
        (self.out / "metrics.jsonl").write_text("")

    def _save_checkpoint(self) -> None:
        tensors = {f"param.{name}": p.detach().cpu().contiguous() for name, p in self.params.named_parameters()}
        state = self.optimizer.state_dict()
        names = [name for name, p in self.params.named_parameters() if p.requires_grad]
        for index, values in state["state"].items():
            for key, value in values.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{names[index]}.{key}"] = value.detach().cpu().reshape(-1).contiguous() \
                        if value.ndim == 0 else value.detach().cpu().contiguous()
        metadata = {"step": str(self.step)}  # sampling is seeded by step, so no RNG state is needed
        atomic_save_safetensors(tensors, self.out / "checkpoint.safetensors", metadata)

    def _load_checkpoint(self, path: Path) -> None:
        from safetensors import safe_open

        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            self.step = int(handle.metadata()["step"])
        with torch.no_grad():
            for name, p in self.params.named_parameters():
                p.copy_(tensors[f"param.{name}"].to(p.device))
        names = [name for name, p in self.params.named_parameters() if p.requires_grad]
        state = {"state": {}, "param_groups": self.optimizer.state_dict()["param_groups"]}
        for index, name in enumerate(names):
            entries = {k.split(".")[-1]: v for k, v in tensors.items() if k.startswith(f"optim.{name}.")}
            if entries:
                entries["step"] = entries["step"].reshape(())
                state["state"][index] = entries
        self.optimizer.load_state_dict(state)
        self._trim_metrics()

    def _trim_metrics(self) -> None:
        """Keep only metric lines up to the checkpoint's step (a killed run may have logged past it)."""
        kept = []
        for line in (self.out / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError):
                continue  # a line torn by the kill
        atomic_write_text(self.out / "metrics.jsonl", "".join(f"{line}\n" for line in kept))

    # --- training ----------------------------------------------------------------------------------
    def _current_steering(self) -> Steering:
        vector = self.params.to_vector(self.base, {})
        return Steering(vector, self.config.mode, self.config.alpha, tuple(self.params.layers))

    def _sample(self, step: int) -> tuple[list[Record], list]:
        rng = random.Random(self.config.seed * 1_000_003 + step)  # step-seeded: resume draws the same prompts
        chosen = rng.sample(self.records, min(self.config.prompts_per_step, len(self.records)))
        return chosen, [r.item for r in chosen]

    def train_step(self) -> StepMetrics:
        start, config = time.time(), self.config
        records, items = self._sample(self.step)
        k = config.samples_per_prompt
        expanded = [item for item in items for _ in range(k)]
        labels = [r.label for r in records for _ in range(k)]
        responses = generate_ids(self.vlm, expanded, self._current_steering(), config.max_new_tokens, do_sample=True,
                                 temperature=config.temperature, seed=config.seed * 7919 + self.step,
                                 batch_size=max(8, k * 2),
                                 suppress_tokens=[t for t in (self.vlm.image_token_id,) if t is not None])
        injected = set()
        if config.safe_response:
            tokenizer = self.vlm.tokenizer
            safe_ids = tokenizer(config.safe_response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            for p, record in enumerate(records):
                if record.label == "harmful":
                    injected.add(p * k + k - 1)
                    responses[p * k + k - 1] = safe_ids
        texts = self.vlm.decode(responses)
        scored = self.rewards.score([image for image, _ in expanded], texts, labels, _fluency(self.vlm, expanded,
                                                                                                responses))
        table = [scored.total[i * k:(i + 1) * k] for i in range(len(records))]
        loss, pairs_count, margin = self._update(expanded, responses, table)
        self.step += 1
        sampled = [i for i in range(len(responses)) if i not in injected]
        means = scored.means(sampled)
        by_label = {lab: [scored.total[i] for i in sampled if labels[i] == lab] for lab in ("harmful", "benign")}
        return StepMetrics(self.step, loss, pairs_count, margin, means["reward"], means["toxicity"],
                           means["visual_consistency"], means["refusal_rate"], means["fluency"],
                           round(time.time() - start, 2),
                           *(sum(v) / len(v) if v else float("nan") for v in by_label.values()))

    def _logprobs(self, items, responses, steered: bool, reference: bool) -> torch.Tensor:
        safe = [r if r else [self.vlm.tokenizer.eos_token_id] for r in responses]
        steering = {}
        if steered:
            steering = dict(directions=self.reference if reference else self.params.directions_by_layer(),
                            mode=self.config.mode, calibration=self.base.calibration,
                            alpha=self.reference_alphas if reference else self.params.alphas())
        total, _ = response_logprobs(self.vlm, items, safe, **steering)
        return total

    def _update(self, expanded, responses, table) -> tuple[float, int, float]:
        k = self.config.samples_per_prompt
        self.optimizer.zero_grad()
        if self.config.objective == "dpo":
            pairs = (preference_pairs_all if self.config.pairing == "best_all" else preference_pairs)(table)
            if not pairs:
                return 0.0, 0, 0.0
            chosen = [p * k + w for p, w, _ in pairs]
            rejected = [p * k + l for p, _, l in pairs]
            items = [expanded[i] for i in chosen + rejected]
            seqs = [responses[i] for i in chosen + rejected]
            with torch.no_grad():
                ref = self._logprobs(items, seqs, steered=self.config.reference == "initial", reference=True)
            policy = self._logprobs(items, seqs, steered=True, reference=False)
            n = len(pairs)
            loss, margins = dpo_loss(policy[:n], policy[n:], ref[:n].to(policy.device), ref[n:].to(policy.device),
                                     self.config.beta)
            result = (loss, n, float(margins.mean()))
        else:
            advantages = group_advantages(table, self.config.advantage_norm).reshape(-1)
            lengths = torch.tensor([max(1, len(r)) for r in responses], dtype=torch.float32)
            policy = self._logprobs(expanded, responses, steered=True, reference=False)
            loss = -(advantages.to(policy.device) * policy / lengths.to(policy.device)).mean()
            result = (loss, len(table), float(advantages.abs().mean()))
        result[0].backward()
        self.optimizer.step()
        return float(result[0].detach()), result[1], result[2]

    def run(self, progress: ProgressFn | None = None, cancel: threading.Event | None = None,
            on_step: Callable[[StepMetrics], None] | None = None, show_bar: bool = True) -> SteeringVector:
        """Train to `config.steps`, checkpointing every `checkpoint_every` steps; returns the refined vector.
        Cancelling saves a checkpoint first, so `resume` loses nothing."""
        from tqdm.auto import tqdm

        bar = tqdm(total=self.config.steps, initial=self.step, desc="Stage II", disable=not show_bar)
        try:
            while self.step < self.config.steps:
                if cancel is not None and cancel.is_set():
                    self._save_checkpoint()
                    raise Cancelled(f"Stage II cancelled at step {self.step}; resume continues from there")
                metrics = self.train_step()
                with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(asdict(metrics)) + "\n")
                if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                    self._save_checkpoint()
                bar.update(1)
                bar.set_postfix(loss=f"{metrics.loss:.3f}", reward=f"{metrics.reward:.2f}")
                if progress is not None:
                    progress(self.step, self.config.steps, "Stage II")
                if on_step is not None:
                    on_step(metrics)
        finally:
            bar.close()
        vector = self.params.to_vector(self.base, {"stage": "II", "stage2": asdict(self.config),
                                                   "rewards": self.rewards.describe()})
        vector.save(self.out / "vectors.safetensors")
        return vector
