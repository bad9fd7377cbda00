"""The preference objectives of Stage II: pairs, DPO loss, GRPO advantages, and the objective registry.

Objectives (`OBJECTIVES`) turn one step's samples and rewards into a loss, reading sequence log-likelihoods
through `teacher_forcing.sequence_logprobs` (the model frozen, gradients into the steering only); a new one is one
function and one `register_objective` call.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.models import VLM, Item
from ..steer.steering import LayerStep, Part, Steerer


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, reference_chosen: torch.Tensor,
             reference_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence-level DPO: mean of -log σ(β[(π_w - ref_w) - (π_l - ref_l)]); also returns the margins."""
    margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(margin).mean(), margin.detach()


def preference_pairs(rewards: Sequence[Sequence[float]], min_gap: float = 1e-3) -> list[tuple[int, int, int]]:
    """(prompt, best sample, worst sample) per prompt; prompts whose samples tie are skipped."""
    pairs = []
    for prompt, scores in enumerate(rewards):
        best = max(range(len(scores)), key=lambda i: scores[i])
        worst = min(range(len(scores)), key=lambda i: scores[i])
        if scores[best] - scores[worst] > min_gap:
            pairs.append((prompt, best, worst))
    return pairs


def preference_pairs_all(rewards: Sequence[Sequence[float]], min_gap: float = 1e-3) -> list[tuple[int, int, int]]:
    """(prompt, best sample, other sample) for every sample clearly worse than the prompt's best: each
    dispreferred behaviour (broken text and compliance alike) gets pushed down, not only the worst."""
    pairs = []
    for prompt, scores in enumerate(rewards):
        best = max(range(len(scores)), key=lambda i: scores[i])
        pairs += [(prompt, best, other) for other in range(len(scores)) if scores[best] - scores[other] > min_gap]
    return pairs


def group_advantages(rewards: Sequence[Sequence[float]], normalise: str = "none") -> torch.Tensor:
    """GRPO-style advantages [P, K]: each sample's reward minus its prompt's group mean, divided by the
    group's standard deviation when `normalise="std"`. The default leaves the scale alone (as Dr. GRPO
    does): dividing by the spread turns near-ties, such as one-word answers whose image-text scores
    differ by noise, into full-size pushes as strong as refusal vs toxic compliance."""
    table = torch.tensor(rewards, dtype=torch.float32)
    centred = table - table.mean(1, keepdim=True)
    if normalise == "std":
        return centred / (table.std(1, keepdim=True) + 1e-6)
    if normalise != "none":
        raise ValueError(f"advantage normalisation must be none or std (got {normalise!r})")
    return centred


# --- objectives ------------------------------------------------------------------------------------
PAIRINGS = ("best_worst", "best_all")
ADVANTAGE_NORMS = ("none", "std")
LogprobFn = Callable[[Sequence[Item], Sequence[Sequence[int]], "Steerer | None"], torch.Tensor]


@dataclass
class ObjectiveSettings:
    """The knobs objectives read (from Stage2Config)."""

    beta: float = 0.5
    pairing: str = "best_worst"  # dpo: best_worst (one pair per prompt) | best_all (best vs every worse sample)
    advantage_norm: str = "none"  # grpo: none (reward minus group mean) | std (also divided by the spread)
    reference_steered: bool = True  # dpo: the frozen initial steering is the reference (else the unsteered model)
    kl: float = 0.0  # grpo: weight of the KL anchor to the reference (0: none)


@dataclass
class PreferenceBatch:
    """One step's samples: K per prompt, in prompt order, with their rewards and how to score them."""

    items: list[Item]  # P x K, each prompt repeated K times
    responses: list[list[int]]
    rewards: list[list[float]]  # [P][K]
    logprobs: LogprobFn  # summed response log-probs under a steering (None: unsteered)
    policy: Steerer  # trainable
    reference: Steerer  # frozen copy of the initial steering
    seed: int = 0  # this step's seed (BiPO's random signs)

    @property
    def samples_per_prompt(self) -> int:
        return len(self.rewards[0]) if self.rewards else 0


@dataclass
class ObjectiveResult:
    """The loss to minimise (None: nothing to learn from this step), how many pairs or groups, a mean margin."""

    loss: torch.Tensor | None
    count: int
    margin: float


Objective = Callable[[PreferenceBatch, ObjectiveSettings], ObjectiveResult]
OBJECTIVES: dict[str, Objective] = {}


def register_objective(name: str, objective: Objective) -> Objective:
    """Add a Stage II objective; `Stage2Config(objective=name)` and the CLI/app choices then offer it."""
    if name in OBJECTIVES:
        raise ValueError(f"objective {name!r} is already registered")
    OBJECTIVES[name] = objective
    return objective


def _pairs(batch: PreferenceBatch, settings: ObjectiveSettings) -> list[tuple[int, int, int]]:
    return (preference_pairs_all if settings.pairing == "best_all" else preference_pairs)(batch.rewards)


def _pair_logprobs(batch: PreferenceBatch, pairs: Sequence[tuple[int, int, int]], policy: Steerer,
                   reference: Steerer | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(policy, frozen reference) summed log-probs of the pairs' chosen samples, then their rejected ones."""
    k = batch.samples_per_prompt
    rows = [p * k + w for p, w, _ in pairs] + [p * k + worse for p, _, worse in pairs]
    items, sequences = [batch.items[i] for i in rows], [batch.responses[i] for i in rows]
    with torch.no_grad():
        frozen = batch.logprobs(items, sequences, reference)
    scored = batch.logprobs(items, sequences, policy)
    return scored, frozen.to(scored.device)


def dpo_objective(batch: PreferenceBatch, settings: ObjectiveSettings) -> ObjectiveResult:
    """Sequence-level DPO on (best, worse) pairs against the frozen reference."""
    pairs = _pairs(batch, settings)
    if not pairs:
        return ObjectiveResult(None, 0, 0.0)
    policy, reference = _pair_logprobs(batch, pairs, batch.policy,
                                       batch.reference if settings.reference_steered else None)
    n = len(pairs)
    loss, margins = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], settings.beta)
    return ObjectiveResult(loss, n, float(margins.mean()))


def grpo_objective(batch: PreferenceBatch, settings: ObjectiveSettings) -> ObjectiveResult:
    """Advantage-weighted mean log-likelihood (reward minus the prompt's group mean), GRPO without clipping; with
    `kl` > 0, plus kl x the k3 estimate of KL(policy || reference) per token on the samples (GRPO's anchor)."""
    advantages = group_advantages(batch.rewards, settings.advantage_norm).reshape(-1)
    lengths = torch.tensor([max(1, len(r)) for r in batch.responses], dtype=torch.float32)
    policy = batch.logprobs(batch.items, batch.responses, batch.policy)
    lengths = lengths.to(policy.device)
    loss = -(advantages.to(policy.device) * policy / lengths).mean()
    if settings.kl > 0:
        with torch.no_grad():
            reference = batch.logprobs(batch.items, batch.responses,
                                       batch.reference if settings.reference_steered else None).to(policy.device)
        log_ratio = (reference - policy) / lengths  # log(ref / policy) per token
        loss = loss + settings.kl * (log_ratio.exp() - log_ratio - 1).mean()
    return ObjectiveResult(loss, len(batch.rewards), float(advantages.abs().mean()))


class Reversed:
    """A steering pushed the other way (every part's strength negated): BiPO's -v."""

    def __init__(self, steering: Steerer) -> None:
        self.steering = steering
        self.mode = steering.mode
        self.steer_at = steering.steer_at

    def plan(self, vlm: VLM) -> list[LayerStep]:
        return [LayerStep(step.layer, tuple(Part(p.direction, p.calibration, -p.alpha) for p in step.parts))
                for step in self.steering.plan(vlm)]


def bipo_objective(batch: PreferenceBatch, settings: ObjectiveSettings) -> ObjectiveResult:
    """BiPO (Cao et al. 2024): DPO against the unsteered model where each pair draws a sign d = +-1; the policy
    steers with d*v and the margin is multiplied by d, so +v must prefer the chosen answer and -v the rejected one."""
    pairs = _pairs(batch, settings)
    if not pairs:
        return ObjectiveResult(None, 0, 0.0)
    signs = random.Random(batch.seed).choices((1.0, -1.0), k=len(pairs))
    losses, margins = [], []
    for sign in (1.0, -1.0):
        mine = [pair for pair, d in zip(pairs, signs) if d == sign]
        if not mine:
            continue
        policy, reference = _pair_logprobs(batch, mine, batch.policy if sign > 0 else Reversed(batch.policy), None)
        n = len(mine)
        margin = sign * settings.beta * ((policy[:n] - reference[:n]) - (policy[n:] - reference[n:]))
        losses.append(-F.logsigmoid(margin))
        margins.append(margin.detach())
    return ObjectiveResult(torch.cat(losses).mean(), len(pairs), float(torch.cat(margins).mean()))


register_objective("dpo", dpo_objective)
register_objective("grpo", grpo_objective)
register_objective("bipo", bipo_objective)
