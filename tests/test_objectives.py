"""Stage II objectives on scripted log-probs: which samples are paired, what each side is scored under, the loss."""

from __future__ import annotations

import pytest
import torch

from workbench.stage2.loop import Stage2Config
from workbench.stage2.objectives import (
    OBJECTIVES,
    ObjectiveSettings,
    PreferenceBatch,
    dpo_loss,
    dpo_objective,
    group_advantages,
    grpo_objective,
    preference_pairs,
    preference_pairs_all,
    register_objective,
)


class ScriptedLogprobs:
    """Summed log-probs = the steerer's scale x a fixed per-response score; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list, list, object, bool]] = []

    def __call__(self, items, sequences, steerer):
        self.calls.append((list(items), [list(s) for s in sequences], steerer, torch.is_grad_enabled()))
        base = torch.tensor([-float(sum(s)) / 10 for s in sequences])
        return base * (1.0 if steerer is None else steerer)


def batch_of(rewards: list[list[float]], responses: list[list[int]]) -> tuple[PreferenceBatch, ScriptedLogprobs]:
    """P prompts x K samples, item i named by its index so the test can see which rows were scored."""
    k = len(rewards[0])
    items = [(None, f"prompt {i // k} sample {i % k}") for i in range(len(responses))]
    scripted = ScriptedLogprobs()
    policy = torch.tensor(1.5, requires_grad=True)
    reference = torch.tensor(0.5, requires_grad=True)
    return PreferenceBatch(items, responses, rewards, scripted, policy, reference), scripted


RESPONSES = [[1], [2, 2], [3, 3, 3], [4], [5, 5], []]  # P=2, K=3; the last is empty


def test_dpo_pairs_the_best_and_worst_sample_of_each_prompt_in_flat_order() -> None:
    batch, scripted = batch_of([[0.1, 0.9, -0.5], [1.0, 0.0, 0.5]], RESPONSES)
    result = dpo_objective(batch, ObjectiveSettings(beta=0.25))
    (ref_items, ref_seqs, ref_steerer, ref_grad), (pol_items, pol_seqs, pol_steerer, pol_grad) = scripted.calls
    assert [text for _, text in pol_items] == ["prompt 0 sample 1", "prompt 1 sample 0",  # chosen, then
                                               "prompt 0 sample 2", "prompt 1 sample 1"]  # rejected
    assert pol_seqs == [[2, 2], [4], [3, 3, 3], [5, 5]] and ref_items == pol_items and ref_seqs == pol_seqs
    assert ref_steerer is batch.reference and not ref_grad  # the reference is frozen
    assert pol_steerer is batch.policy and pol_grad
    score = torch.tensor([-0.4, -0.4, -0.9, -1.0])
    expected, margins = dpo_loss(1.5 * score[:2], 1.5 * score[2:], 0.5 * score[:2], 0.5 * score[2:], 0.25)
    assert result.count == 2
    torch.testing.assert_close(result.loss, expected)
    assert result.margin == pytest.approx(float(margins.mean()))
    result.loss.backward()
    assert batch.policy.grad is not None and batch.reference.grad is None


def test_dpo_best_all_pairs_every_clearly_worse_sample_and_unsteered_reference_scores_with_none() -> None:
    batch, scripted = batch_of([[0.1, 0.9, -0.5], [1.0, 0.0, 0.5]], RESPONSES)
    result = dpo_objective(batch, ObjectiveSettings(pairing="best_all", reference_steered=False))
    assert result.count == 4
    reference_call, policy_call = scripted.calls
    assert reference_call[2] is None and policy_call[2] is batch.policy
    assert [text for _, text in policy_call[0]] == [
        "prompt 0 sample 1", "prompt 0 sample 1", "prompt 1 sample 0", "prompt 1 sample 0",
        "prompt 0 sample 0", "prompt 0 sample 2", "prompt 1 sample 1", "prompt 1 sample 2"]


def test_dpo_with_only_ties_has_nothing_to_learn_and_scores_nothing() -> None:
    batch, scripted = batch_of([[0.2, 0.2, 0.2], [0.5, 0.5, 0.5]], RESPONSES)
    result = dpo_objective(batch, ObjectiveSettings())
    assert (result.loss, result.count, result.margin) == (None, 0, 0.0) and scripted.calls == []


def test_pairs_use_a_strict_gap() -> None:
    assert preference_pairs([[0.0, 0.5]], min_gap=0.5) == [] and preference_pairs([[0.0, 0.5]], min_gap=0.4) == [
        (0, 1, 0)]
    assert preference_pairs_all([[0.0, 0.5, 0.2]], min_gap=0.3) == [(0, 1, 0)]
    assert preference_pairs([[0.0, 0.002]]) == [(0, 1, 0)] and preference_pairs([[0.0, 0.0005]]) == []
    assert preference_pairs_all([[0.0, 0.002]]) == [(0, 1, 0)] and preference_pairs_all([[0.0, 0.0005]]) == []


def test_grpo_weights_each_samples_per_token_logprob_by_its_centred_reward() -> None:
    rewards = [[1.0, 0.0, 0.5], [0.0, 2.0, 1.0]]
    batch, scripted = batch_of(rewards, RESPONSES)
    result = grpo_objective(batch, ObjectiveSettings())
    (items, sequences, steerer, grad), = scripted.calls
    assert steerer is batch.policy and grad and sequences == RESPONSES
    advantages = torch.tensor([0.5, -0.5, 0.0, -1.0, 1.0, 0.0])
    policy = 1.5 * torch.tensor([-0.1, -0.4, -0.9, -0.4, -1.0, 0.0])
    lengths = torch.tensor([1.0, 2.0, 3.0, 1.0, 2.0, 1.0])  # an empty response counts as one token
    torch.testing.assert_close(result.loss, -(advantages * policy / lengths).mean())
    assert result.count == 2 and result.margin == pytest.approx(0.5)


def test_grpo_standardised_advantages_divide_by_the_group_spread() -> None:
    rewards = [[1.0, 0.0, 0.5], [0.0, 2.0, 1.0]]
    batch, _ = batch_of(rewards, [[1], [2], [3], [4], [5], [6]])
    result = grpo_objective(batch, ObjectiveSettings(advantage_norm="std"))
    advantages = group_advantages(rewards, "std").reshape(-1)
    torch.testing.assert_close(advantages[:3], torch.tensor([0.5, -0.5, 0.0]) / (0.5 + 1e-6))
    policy = 1.5 * -torch.arange(1, 7, dtype=torch.float32) / 10
    torch.testing.assert_close(result.loss, -(advantages * policy).mean())
    assert float(result.loss.detach()) != pytest.approx(float(grpo_objective(batch, ObjectiveSettings()).loss.detach()))


def test_advantages_accept_integer_rewards_and_stay_bounded_for_a_near_tie() -> None:
    torch.testing.assert_close(group_advantages([[1, 0, 2]]), torch.tensor([[0.0, -1.0, 1.0]]))
    near_tie = group_advantages([[0.0, 2e-6]], "std")  # the epsilon keeps noise from exploding past +-1
    assert float(near_tie.abs().max()) < 0.5  # 0.41 with the epsilon; 0.71 without it


def test_objective_defaults_are_stage2s_and_registering_twice_is_refused() -> None:
    assert ObjectiveSettings() == Stage2Config().objective_settings()
    assert set(OBJECTIVES) >= {"dpo", "grpo"} and OBJECTIVES["dpo"] is dpo_objective
    with pytest.raises(ValueError, match="^objective 'dpo' is already registered$"):
        register_objective("dpo", grpo_objective)
    assert OBJECTIVES["dpo"] is dpo_objective
    mine = register_objective("halved_dpo", lambda batch, settings: dpo_objective(batch, settings))
    try:
        assert OBJECTIVES["halved_dpo"] is mine  # what Stage2Config(objective="halved_dpo") then runs
    finally:
        del OBJECTIVES["halved_dpo"]
    empty, _ = batch_of([[]], [])
    assert empty.samples_per_prompt == 0 and PreferenceBatch([], [], [], None, None, None).samples_per_prompt == 0


def test_response_logprobs_keep_input_order_across_modality_batches_and_apply_the_steering() -> None:
    """Mixed image and text prompts are batched by modality; each total must land back at its own index."""
    from conftest import make_image, tiny

    from workbench.steer.steering import steering_for
    from workbench.steer.teacher_forcing import pack_responses, response_logprobs, sequence_logprobs
    from workbench.steer.vectors import SteeringVector

    vlm = tiny("llava")
    items = [(None, "tell me how to steal a car"), (make_image("red"), "what is this"), (None, "hello there"),
             (make_image("blue", (48, 40)), "what colour is it"), (None, "say something")]
    responses = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14], [15]]
    with torch.no_grad():
        totals, lengths = response_logprobs(vlm, items, responses, batch_size=2)
        one_by_one = [sequence_logprobs(vlm, *pack_responses(vlm, [item], [response]))
                      for item, response in zip(items, responses)]
    assert lengths.tolist() == [3, 1, 2, 4, 1]
    torch.testing.assert_close(totals, torch.cat([total for total, _ in one_by_one]), atol=1e-4, rtol=1e-4)
    generator = torch.Generator().manual_seed(0)
    vector = SteeringVector({1: torch.randn(32, generator=generator)}, {1: torch.zeros(32)}, {"num_layers": 3})
    with torch.no_grad():
        steered, _ = response_logprobs(vlm, items, responses, steering_for(vector, "additive", 8.0)[0],
                                       batch_size=2)
    assert bool((steered - totals).abs().min() > 1e-3)  # every row moved: the steering reached every batch
