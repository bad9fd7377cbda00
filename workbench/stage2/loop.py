"""Stage II: refine steering vectors by sequence-level preference optimisation, the VLM frozen.

Each step samples K responses per prompt under the current steering, scores them with the reward
terms (rewards/combined.py), and minimises a registered objective (objectives.py: DPO on best-vs-worse
pairs against a frozen reference, or GRPO) on teacher-forced sequence log-likelihoods. Only the
per-layer directions (and optionally per-layer strengths) train: `TrainableSteering` is the
differentiable twin of `Steering` and steers through the same `plan()`. The run folder
(stage2_store.py) holds config, metrics, an atomic checkpoint and the final vectors; `resume=True`
continues from the checkpoint.
"""

from __future__ import annotations

import copy
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..core.distributed import SINGLE, Shard
from ..core.models import VLM, Item
from ..core.progress import Cancelled, ProgressFn, step_eta
from ..core.records import Record, dataset_hash, record_key
from ..core.runlock import RunLock
from ..rewards.combined import RewardModel, RewardWeights
from ..steer.rules import get_rule
from ..steer.steering import RECORDED, STEER_AT, LayerStep, Mode, Part, Steering, generate_ids
from ..steer.teacher_forcing import response_logprobs
from ..steer.vectors import SteeringVector
from .objectives import (
    ADVANTAGE_NORMS,
    OBJECTIVES,
    PAIRINGS,
    ObjectiveSettings,
    PreferenceBatch,
)
from .store import Stage2Store

RESUMABLE_CHANGES = ("steps", "checkpoint_every")  # a resumed run may train longer or checkpoint more often
PROMPT_SEED_STRIDE = 1_000_003  # step-seeded prompt draws: seed * stride + step (resume draws the same prompts)
SAMPLE_SEED_STRIDE = 7919  # step-seeded sampling: seed * stride + step
REFERENCES = ("initial", "unsteered")


@dataclass
class Stage2Config:
    """Everything that shapes a Stage II run (saved as config.json; the CLI and app read their defaults here)."""

    steps: int = 40
    prompts_per_step: int = 8
    samples_per_prompt: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 48
    beta: float = 0.5
    learning_rate: float = 0.05
    objective: str = "dpo"  # a registered objective: dpo | grpo (advantage-weighted log-likelihood)
    reference: str = "initial"  # initial: the Stage I steering, frozen | unsteered
    mode: Mode = "adaptive"
    alpha: float = 1.0
    layers: list[int] | None = None
    steer_at: str = "all"  # which positions sampling and teacher forcing steer (steering.STEER_AT)
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
    kl: float = 0.0  # grpo: weight of the KL anchor to the reference (0: none)
    preset: str = "workbench"  # the named recipe these settings started from (stage2/presets.py)

    def __post_init__(self) -> None:
        self.weights = RewardWeights(**dict(self.weights))
        get_rule(self.mode)  # names the known rules
        problems = []
        if self.steer_at not in STEER_AT:
            problems.append(f"steer_at must be {' or '.join(STEER_AT)} (got {self.steer_at!r})")
        if self.steps < 1:
            problems.append(f"steps must be at least 1 (got {self.steps})")
        if self.samples_per_prompt < 2:
            problems.append(f"samples per prompt (K) must be at least 2 to form pairs (got {self.samples_per_prompt})")
        if self.prompts_per_step < 1:
            problems.append(f"prompts per step must be at least 1 (got {self.prompts_per_step})")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            problems.append(f"temperature must be positive (got {self.temperature})")
        for name, value, allowed in (("pairing", self.pairing, PAIRINGS),
                                     ("advantage normalisation", self.advantage_norm, ADVANTAGE_NORMS),
                                     ("objective", self.objective, tuple(OBJECTIVES)),
                                     ("reference", self.reference, REFERENCES)):
            if value not in allowed:
                problems.append(f"{name} must be {' or '.join(allowed)} (got {value!r})")
        if not (0 <= self.kl < 100 and math.isfinite(self.kl)):
            problems.append(f"kl must be between 0 and 100 (got {self.kl})")
        if not (0 < self.learning_rate < 10):
            problems.append(f"learning rate must be in (0, 10) (got {self.learning_rate})")
        if problems:
            raise ValueError("; ".join(problems))

    def objective_settings(self) -> ObjectiveSettings:
        return ObjectiveSettings(self.beta, self.pairing, self.advantage_norm, self.reference == "initial", self.kl)


class TrainableSteering(torch.nn.Module):
    """The only trainable tensors: one direction per layer and, optionally, one log-strength per layer.
    Steers like a `Steering` (same `plan()`), with gradients reaching the parameters."""

    def __init__(self, vector: SteeringVector, layers: Sequence[int], mode: Mode, alpha: float,
                 train_strength: bool, steer_at: str = "all") -> None:
        super().__init__()
        self.steer_at = steer_at  # sampling and teacher forcing steer the same positions (`steered_positions`)
        self.layers = list(layers)
        self.mode = mode
        self.alpha = alpha
        self.directions = torch.nn.ParameterDict(
            {str(k): torch.nn.Parameter(vector.directions[k].detach().float().clone()) for k in self.layers})
        initial = torch.tensor([max(abs(vector.scale(k)), 1e-3) for k in self.layers]).log()
        self.log_strength = torch.nn.Parameter(initial, requires_grad=train_strength)
        self.signs = {k: (1.0 if vector.scale(k) >= 0 else -1.0) for k in self.layers}
        self.calibration = {k: vector.calibration[k] for k in self.layers if k in vector.calibration}

    def alphas(self) -> dict[int, torch.Tensor]:
        return {k: self.alpha * self.signs[k] * self.log_strength[i].exp() for i, k in enumerate(self.layers)}

    def plan(self, vlm: VLM) -> list[LayerStep]:
        """Per layer, in execution order: the parameter direction, the benign mean and alpha x strength."""
        alphas = self.alphas()
        steps = []
        for k in sorted(self.layers):
            device = next(vlm.layer_module(k).parameters()).device
            calibration = self.calibration.get(k)
            steps.append(LayerStep(k, (Part(self.directions[str(k)].to(device),
                                            None if calibration is None else calibration.to(device),
                                            alphas[k].to(device)),)))
        return steps

    def to_vector(self, base: SteeringVector, metadata: dict[str, Any]) -> SteeringVector:
        """The current parameters as a SteeringVector on the CPU (like a loaded one), wherever training runs."""
        scales = {k: self.signs[k] * float(self.log_strength[i].detach().exp()) for i, k in enumerate(self.layers)}
        return SteeringVector({k: self.directions[str(k)].detach().cpu().clone() for k in self.layers},
                              dict(self.calibration), {**base.metadata, **metadata}, scales)

    def frozen(self, base: SteeringVector) -> Steering:
        """A plain `Steering` with the current values (for sampling under no_grad)."""
        return Steering(self.to_vector(base, {}), self.mode, self.alpha, tuple(self.layers),
                        self.steer_at)  # type: ignore[arg-type]


@dataclass
class StepMetrics:
    """One logged step: the loop's own numbers plus the reward's means by metric name (reward_metrics())."""

    step: int
    loss: float
    pairs: int
    margin: float
    seconds: float
    reward_harmful: float
    reward_benign: float
    means: dict[str, float] = field(default_factory=dict)  # "reward" and one entry per reward term

    def row(self) -> dict[str, Any]:
        """The metrics.jsonl line: flat, by name."""
        return {"step": self.step, "loss": self.loss, "pairs": self.pairs, "margin": self.margin, **self.means,
                "seconds": self.seconds, "reward_harmful": self.reward_harmful, "reward_benign": self.reward_benign}

    def __getattr__(self, name: str) -> float:
        means = self.__dict__.get("means", {})
        if name in means:
            return means[name]
        raise AttributeError(name)


def _fluency(vlm: VLM, items: Sequence[Item], responses: list[list[int]]) -> list[float]:
    """exp(mean token log-prob) of each response under the unsteered model (0 for empty responses)."""
    safe = [r if r else [vlm.tokenizer.eos_token_id] for r in responses]
    with torch.no_grad():
        total, length = response_logprobs(vlm, items, safe)
    return [float((t / n.clamp_min(1)).exp()) if r else 0.0 for t, n, r in zip(total, length, responses)]


class Stage2Run:
    """One refinement run in `out_dir`; `run()` trains, checkpoints and writes the final vectors."""

    def __init__(self, vlm: VLM, vector: SteeringVector, records: Sequence[Record], rewards: RewardModel,
                 config: Stage2Config, out_dir: str | Path, resume: bool = False, shard: Shard = SINGLE) -> None:
        vector.check_compatible(vlm)
        if not records:
            raise ValueError("Stage II needs records (harmful and benign prompts)")
        self.vlm, self.base, self.records, self.rewards, self.config = vlm, vector, list(records), rewards, config
        self.out = Path(out_dir)
        self.store = Stage2Store(self.out)
        self.lock = RunLock(self.out)
        self.shard = shard  # under torchrun: sampling sharded, rank 0 writes; every rank holds rank 0's parameters
        if shard.is_main:
            self.lock.check_free()  # another job is writing this run: refuse before touching anything
        layers = config.layers if config.layers is not None else vector.layers
        vector.select(list(layers))  # names missing layers
        self.params = TrainableSteering(vector, layers, config.mode, config.alpha, config.train_strength,
                                        config.steer_at)
        self.params.to(next(vlm.layer_module(layers[0]).parameters()).device)
        self.reference = copy.deepcopy(self.params).requires_grad_(False)  # the initial steering, frozen
        self.optimizer = torch.optim.Adam([p for p in self.params.parameters() if p.requires_grad],
                                          lr=config.learning_rate)
        self.step = 0
        self.inputs = {"data": dataset_hash(self.records), "vectors": vector.fingerprint()}  # hashed once
        if resume:
            if not self.store.can_resume():
                raise ValueError(f"{self.out} holds no Stage II checkpoint to resume; start a new run instead")
            must_match = [f.name for f in fields(Stage2Config) if f.name not in RESUMABLE_CHANGES]
            self.store.check_same_settings(asdict(config), asdict(Stage2Config()), must_match)
            self.store.check_same_inputs(self.inputs)
            self.step = self.store.load_checkpoint(self.params, self.optimizer)
        elif shard.is_main:
            self.store.start(asdict(config), rewards.describe(), self.inputs)

    def _sample(self, step: int) -> tuple[list[Record], list[Item]]:
        rng = random.Random(self.config.seed * PROMPT_SEED_STRIDE + step)
        chosen = rng.sample(self.records, min(self.config.prompts_per_step, len(self.records)))
        return chosen, [r.item for r in chosen]

    def _responses(self, records: list[Record], expanded: list[Item]) -> tuple[list[list[int]], set[int]]:
        """K sampled responses per prompt under the current steering, with the optional safe reply put in place
        of each harmful prompt's last sample; also the indices of those injected replies."""
        config, k = self.config, self.config.samples_per_prompt
        responses = generate_ids(self.vlm, expanded, self.params.frozen(self.base), config.max_new_tokens,
                                 do_sample=True, temperature=config.temperature,
                                 seed=config.seed * SAMPLE_SEED_STRIDE + self.step, batch_size=max(8, k * 2),
                                 suppress_tokens=[t for t in (self.vlm.image_token_id,) if t is not None],
                                 shard=self.shard)
        injected: set[int] = set()
        if config.safe_response:
            safe_ids = self.vlm.token_ids(config.safe_response) + [self.vlm.tokenizer.eos_token_id]
            for p, record in enumerate(records):
                if record.label == "harmful":
                    injected.add(p * k + k - 1)
                    responses[p * k + k - 1] = safe_ids
        return responses, injected

    def train_step(self) -> StepMetrics:
        start, k = time.time(), self.config.samples_per_prompt
        records, items = self._sample(self.step)
        expanded = [item for item in items for _ in range(k)]
        labels = [r.label for r in records for _ in range(k)]
        responses, injected = self._responses(records, expanded)
        texts = self.vlm.decode(responses)
        scored = self.rewards.score([image for image, _ in expanded], texts, labels,
                                    _fluency(self.vlm, expanded, responses))
        table = [scored.total[i * k:(i + 1) * k] for i in range(len(records))]
        loss, count, margin = self._update(expanded, responses, table)
        self.step += 1
        sampled = [i for i in range(len(responses)) if i not in injected]
        by_label = {lab: [scored.total[i] for i in sampled if labels[i] == lab] for lab in ("harmful", "benign")}
        harmful, benign = (sum(v) / len(v) if v else float("nan") for v in by_label.values())
        return StepMetrics(self.step, loss, count, margin, round(time.time() - start, 2), harmful, benign,
                           scored.means(sampled))

    def _logprobs(self, items: Sequence[Item], responses: Sequence[Sequence[int]], steering: Any) -> torch.Tensor:
        safe = [list(r) if r else [self.vlm.tokenizer.eos_token_id] for r in responses]
        return response_logprobs(self.vlm, items, safe, steering)[0]

    def _update(self, expanded: list[Item], responses: list[list[int]], table: list[list[float]]
                ) -> tuple[float, int, float]:
        """One optimiser step on the configured objective; (loss, pairs or groups, mean margin)."""
        self.optimizer.zero_grad()
        batch = PreferenceBatch(expanded, responses, table, self._logprobs, self.params, self.reference,
                                self.config.seed * SAMPLE_SEED_STRIDE + self.step)
        result = OBJECTIVES[self.config.objective](batch, self.config.objective_settings())
        if result.loss is None:
            return 0.0, 0, 0.0
        result.loss.backward()
        self.optimizer.step()
        self.shard.broadcast(list(self.params.parameters()))  # ranks agree to the bit, whatever their arithmetic
        return float(result.loss.detach()), result.count, result.margin

    def run(self, progress: ProgressFn | None = None, cancel: threading.Event | None = None,
            on_step: Callable[[StepMetrics], None] | None = None, show_bar: bool = True) -> SteeringVector:
        """Train to `config.steps`, checkpointing every `checkpoint_every` steps; returns the refined vector.
        Cancelling saves a checkpoint first, so `resume` loses nothing."""
        from tqdm.auto import tqdm

        main = self.shard.is_main
        if main:
            self.lock.acquire()  # one writer per run folder, for as long as it trains
        bar = tqdm(total=self.config.steps, initial=self.step, desc="Stage II", disable=not (show_bar and main),
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        paces: list[float] = []  # this session's step times: the estimate leaves out the first (warm-up)
        try:
            while self.step < self.config.steps:
                if cancel is not None and cancel.is_set():
                    self.store.save_checkpoint(self.step, self.params, self.optimizer)
                    raise Cancelled(f"Stage II cancelled at step {self.step}; resume continues from there")
                metrics = self.train_step()
                if not main:
                    continue
                self.store.append_metrics(metrics.row())
                if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                    self.store.save_checkpoint(self.step, self.params, self.optimizer)
                paces.append(metrics.seconds)
                bar.update(1)
                bar.set_postfix_str(f"loss {metrics.loss:.3f}, reward {metrics.means['reward']:.2f}, "
                                    f"{step_eta(paces, self.config.steps - self.step) or 'done'}")
                if progress is not None:
                    progress(self.step, self.config.steps, "Stage II")
                if on_step is not None:
                    on_step(metrics)
            recorded = {"mode": self.config.mode, "alpha": self.config.alpha, "layers": list(self.params.layers),
                        "steer_at": self.config.steer_at}  # what training applied: use it unless overridden
            vector = self.params.to_vector(self.base, {
                "stage": "II", "stage2": asdict(self.config), "rewards": self.rewards.describe(), RECORDED: recorded,
                "training_data_hash": self.inputs["data"], "run": self.out.name,
                "training_records": sorted(set(self.base.metadata.get("training_records") or [])
                                           | {record_key(r) for r in self.records}),
                "training_behaviors": sorted(set(self.base.metadata.get("training_behaviors") or []) | {
                    r.behavior for r in self.records if r.label == "harmful" and r.behavior}),
                "made_from": {"run": self.base.metadata.get("run"), "stage": self.base.metadata.get("stage", "I")}})
            if main:
                vector.save(self.store.vectors)
            return vector
        finally:
            bar.close()
            if main:
                self.lock.release()


__all__ = ["RESUMABLE_CHANGES", "Stage2Config", "Stage2Run", "StepMetrics", "TrainableSteering"]
