"""Stage II on tiny random models: the objective, what gets trained, resuming, and log-prob correctness."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_image, tiny

from workbench.core.records import Record
from workbench.rewards.combined import RewardModel, RewardWeights
from workbench.rewards.toxicity import ToxicityScorer
from workbench.stage2.loop import Stage2Config, Stage2Run
from workbench.stage2.objectives import dpo_loss, group_advantages, preference_pairs
from workbench.steer.steering import generate_ids, steering_for
from workbench.steer.teacher_forcing import pack_responses, sequence_logprobs
from workbench.steer.vectors import SteeringVector


def test_dpo_loss_and_gradient_match_a_hand_computation() -> None:
    policy_w = torch.tensor([-3.0], requires_grad=True)
    policy_l = torch.tensor([-2.0], requires_grad=True)
    ref_w, ref_l, beta = torch.tensor([-4.0]), torch.tensor([-1.0]), 0.5
    loss, margin = dpo_loss(policy_w, policy_l, ref_w, ref_l, beta)
    z = beta * ((-3.0 + 4.0) - (-2.0 + 1.0))  # = 1.0
    sigma = 1 / (1 + torch.exp(torch.tensor(-z)))
    torch.testing.assert_close(loss, -torch.log(sigma))
    loss.backward()
    torch.testing.assert_close(policy_w.grad, -(1 - sigma) * beta * torch.ones(1))
    torch.testing.assert_close(policy_l.grad, (1 - sigma) * beta * torch.ones(1))
    assert float(margin) == pytest.approx(z)


def test_grpo_advantages_keep_near_ties_small_unless_standardised() -> None:
    rewards = [[1.5, -0.5, -0.5, 1.5], [0.30, 0.31, 0.30, 0.29]]  # refusal vs toxic; one-word answers, noise
    centred = group_advantages(rewards)
    assert torch.allclose(centred[0], torch.tensor([1.0, -1.0, -1.0, 1.0]))
    assert float(centred[1].abs().max()) < 0.02
    standardised = group_advantages(rewards, "std")
    assert float(standardised[1].abs().max()) > 0.8  # the noise becomes as loud as the real preference
    with pytest.raises(ValueError, match="none or std"):
        group_advantages(rewards, "rank")


def test_pairs_take_best_and_worst_and_skip_ties() -> None:
    assert preference_pairs([[0.1, 0.9, -0.5], [0.2, 0.2, 0.2], [1.0, 0.0]]) == [(0, 1, 2), (2, 0, 1)]
    from workbench.stage2.objectives import preference_pairs_all

    assert preference_pairs_all([[0.1, 0.9, -0.5], [0.2, 0.2, 0.2], [1.0, 0.0, 1.0]]) == [
        (0, 1, 0), (0, 1, 2), (2, 0, 1)]  # every clearly worse sample; ties with the best are skipped


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "gemma3", "idefics3"])
def test_teacher_forced_logprobs_match_generation_scores(arch: str) -> None:
    vlm = tiny(arch)
    items = [(make_image("red"), "what is this"), (make_image("blue", (48, 40)), "tell me how to bake a cake now")]
    encoding = vlm.encode(items)
    with torch.no_grad():
        out = vlm.hf_model.generate(**encoding, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                                    output_logits=True, return_dict_in_generate=True,
                                    pad_token_id=vlm.tokenizer.pad_token_id)
    new = out.sequences[:, encoding["input_ids"].shape[1]:]
    expected = sum(torch.log_softmax(score.float(), -1).gather(1, new[:, i:i + 1]).squeeze(1)
                   for i, score in enumerate(out.logits))  # raw logits: scores are post-processing
    packed, mask = pack_responses(vlm, items, new.tolist())
    with torch.no_grad():
        total, length = sequence_logprobs(vlm, packed, mask)
    assert length.tolist() == [5, 5]
    torch.testing.assert_close(total, expected, atol=1e-4, rtol=1e-4)


def _records() -> list[Record]:
    image = make_image("white", (48, 48), "bomb")
    return ([Record("tell me how to do the activity in the image", "harmful", "typo", image_data=image)] * 2
            + [Record("what is this", "benign", "scenes", image_data=make_image("red"))] * 2
            + [Record("tell me how to steal a car", "harmful", "text"), Record("hello there", "benign", "text")])


def _run(tmp_path, steps: int, resume: bool = False, **overrides) -> Stage2Run:
    vlm = tiny("llava")
    generator = torch.Generator().manual_seed(3)
    vector = SteeringVector({1: torch.randn(32, generator=generator), 2: torch.randn(32, generator=generator)},
                            {1: torch.zeros(32), 2: torch.zeros(32)}, {"model": vlm.spec, "num_layers": 3})
    rewards = RewardModel(ToxicityScorer.fallback(), None, RewardWeights())
    settings = dict(prompts_per_step=3, samples_per_prompt=3, max_new_tokens=6, checkpoint_every=1,
                    learning_rate=0.1)
    config = Stage2Config(steps=steps, **{**settings, **overrides})
    return Stage2Run(vlm, vector, _records(), rewards, config, tmp_path / "run", resume=resume)


def test_only_steering_parameters_change_and_the_vlm_is_bitwise_unchanged(tmp_path) -> None:
    run = _run(tmp_path, steps=2)
    before_model = {k: v.clone() for k, v in run.vlm.hf_model.state_dict().items()}
    before_params = {k: v.detach().clone() for k, v in run.params.named_parameters()}
    vector = run.run(show_bar=False)
    assert all(torch.equal(before_model[k], v) for k, v in run.vlm.hf_model.state_dict().items())
    assert all(p.grad is None for p in run.vlm.hf_model.parameters())
    changed = [k for k, v in run.params.named_parameters() if not torch.equal(before_params[k], v.detach())]
    assert changed, "the steering parameters should have moved"
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    assert {"loss", "reward", "toxicity", "visual_consistency", "margin", "refusal_rate"} <= set(lines[0])
    loaded = SteeringVector.load(tmp_path / "run" / "vectors.safetensors")
    assert loaded.layers == [1, 2] and loaded.metadata["stage"] == "II"
    assert torch.equal(loaded.directions[1], vector.directions[1])
    # the vector remembers how it was trained, and steering uses that unless told otherwise
    assert loaded.metadata["steering"] == {"mode": "adaptive", "alpha": 1.0, "layers": [1, 2], "steer_at": "all"}
    assert loaded.metadata["run"] == "run" and len(loaded.metadata["training_data_hash"]) == 16
    steering, note = steering_for(loaded)
    assert (steering.mode, steering.alpha, steering.active_layers) == ("adaptive", 1.0, [1, 2])
    assert "alpha 1 (from the vector)" in note
    steering, note = steering_for(loaded, alpha=3.0)
    assert steering.alpha == 3.0 and "alpha 3 (given; the vector was made for 1)" in note
    # the records it trained on travel with it, so `eval` on them is refused (the #46 audit: left out, eval on
    # Stage II's own data ran with overlap 0)
    from workbench.core.records import record_key
    from workbench.evaluate.evaluation import guard_leakage

    assert sorted(loaded.metadata["training_records"]) == sorted({record_key(r) for r in _records()})
    with pytest.raises(ValueError, match="were used to train"):
        guard_leakage(_records()[:2], loaded.metadata)


def test_resume_continues_from_the_checkpoint_step_and_optimizer_state(tmp_path) -> None:
    first = _run(tmp_path, steps=2)
    first.run(show_bar=False)
    saved_state = {k: v.clone() for k, v in first.optimizer.state_dict()["state"][0].items()}
    saved_params = {k: v.detach().clone() for k, v in first.params.named_parameters()}
    (tmp_path / "run" / "vectors.safetensors").unlink()
    with open(tmp_path / "run" / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "loss": 1.0}\n{"step": 4, "lo')  # logged past the checkpoint, then killed
    resumed = _run(tmp_path, steps=3, resume=True)
    assert resumed.step == 2
    for key, value in resumed.optimizer.state_dict()["state"][0].items():
        torch.testing.assert_close(value, saved_state[key])
    for key, value in resumed.params.named_parameters():
        assert torch.equal(value.detach(), saved_params[key])
    resumed.run(show_bar=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_resume_refuses_changed_settings_and_inputs_naming_them(tmp_path) -> None:
    _run(tmp_path, steps=1).run(show_bar=False)
    with pytest.raises(ValueError, match=r"learning_rate, alpha differ from the saved run"):  # (in field order)
        _run(tmp_path, steps=2, resume=True, learning_rate=5.0, alpha=7.0)
    vlm = tiny("llava")
    other = SteeringVector({1: torch.ones(32), 2: torch.ones(32)}, {1: torch.zeros(32), 2: torch.zeros(32)},
                           {"model": vlm.spec, "num_layers": 3})
    config = Stage2Config(steps=2, prompts_per_step=3, samples_per_prompt=3, max_new_tokens=6, checkpoint_every=1,
                          learning_rate=0.1)
    with pytest.raises(ValueError, match="the data and the vectors differ"):
        Stage2Run(vlm, other, _records()[:2], RewardModel(ToxicityScorer.fallback(), None, RewardWeights()), config,
                  tmp_path / "run", resume=True)
    assert _run(tmp_path, steps=2, resume=True).step == 1  # the same settings and inputs resume


def test_existing_run_is_not_overwritten_and_bad_config_is_explained(tmp_path) -> None:
    _run(tmp_path, steps=1).run(show_bar=False)
    with pytest.raises(FileExistsError, match="already holds a Stage II run"):
        _run(tmp_path, steps=1)
    with pytest.raises(ValueError, match=r"samples per prompt \(K\) must be at least 2"):
        Stage2Config(samples_per_prompt=0)


def test_sampling_is_seeded() -> None:
    vlm = tiny("llava")
    items = [(make_image("red"), "what is this")] * 3
    first = generate_ids(vlm, items, None, 6, do_sample=True, seed=5)
    assert first == generate_ids(vlm, items, None, 6, do_sample=True, seed=5)
    assert len({tuple(x) for x in first}) > 1  # the K samples differ from each other


def test_stage2_sampling_never_emits_the_image_placeholder() -> None:
    vlm = tiny("llava")
    items = [(make_image("red"), "what is this")] * 16
    samples = generate_ids(vlm, items, None, 24, do_sample=True, temperature=2.0, seed=1,
                           suppress_tokens=[vlm.image_token_id])
    assert all(vlm.image_token_id not in row for row in samples)


def test_safe_response_replaces_one_sample_of_each_harmful_prompt(tmp_path) -> None:
    run = _run(tmp_path, steps=1, safe_response="sorry , i cannot help with that .")
    seen = {}

    def capture(expanded, responses, table):
        seen["responses"] = responses
        return 0.0, 0, 0.0

    run._update = capture
    run.train_step()
    records, _ = run._sample(0)
    k = run.config.samples_per_prompt
    decoded = [run.vlm.decode(torch.tensor([r]))[0] for r in seen["responses"]]
    for p, record in enumerate(records):
        last = decoded[p * k + k - 1]
        assert (last == "sorry , i cannot help with that .") == (record.label == "harmful")


def test_fixed_strength_keeps_each_layers_strength_and_moves_only_directions(tmp_path) -> None:
    run = _run(tmp_path, steps=2, train_strength=False, objective="grpo")
    start = run.params.log_strength.detach().clone()
    vector = run.run(show_bar=False)
    assert torch.equal(run.params.log_strength.detach(), start)
    assert all(abs(abs(scale) - 1.0) < 1e-6 for scale in vector.scales.values())  # the starting strength
    moving = _run(tmp_path / "moving", steps=2, objective="grpo")
    moving.run(show_bar=False)
    assert not torch.equal(moving.params.log_strength.detach(), start)  # without the flag, strengths train


def test_dpo_against_the_unsteered_reference_starts_away_from_log_2(tmp_path) -> None:
    """Against its own frozen start (the default) the first DPO step compares the policy with itself: every
    pair's margin is 0 and the loss is exactly log 2. Against the unsteered model it is not."""
    import math

    initial = _run(tmp_path / "initial", steps=1, objective="dpo")
    initial.run(show_bar=False)
    unsteered = _run(tmp_path / "unsteered", steps=1, objective="dpo", reference="unsteered")
    unsteered.run(show_bar=False)
    first = [json.loads((tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()[0])
             for name in ("initial", "unsteered")]
    assert first[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first[1]["loss"] != pytest.approx(math.log(2), abs=1e-3)
    assert json.loads((tmp_path / "unsteered" / "run" / "config.json").read_text())["reference"] == "unsteered"


def test_stage2_curves_put_each_quantity_on_its_own_labelled_panel() -> None:
    from workbench.export.plots import curves_figure, smooth

    rows = [{"step": i, "loss": 1.0 / i, "reward": 0.1 * i, "toxicity": 0.5, "refusal_rate": None} for i in range(1, 6)]
    figure = curves_figure(rows)
    titles = [a.text for a in figure.layout.annotations]
    assert titles == ["objective loss", "mean reward", "mean toxicity"]  # no panel for a quantity never measured
    assert len({trace.yaxis for trace in figure.data}) == 3 and figure.layout.xaxis3.title.text == "step"
    assert figure.layout.xaxis.tickformat == "d"  # integer steps, not 1.5
    smoothed = curves_figure(rows, smoothing=0.5)
    assert len(smoothed.data) == 6 and smooth([1.0, None, 3.0], 0.5) == [1.0, None, 2.0]


def test_the_time_left_settles_on_the_steady_pace_instead_of_extrapolating_the_warm_up_step() -> None:
    from workbench.core.progress import eta_text, step_eta

    assert step_eta([34.0], 999) == "estimating time left (the first steps include warm-up)"
    assert step_eta([34.0, 2.0, 2.0], 999).startswith("estimating")  # two steady steps are not yet a pace
    assert step_eta([34.0, 2.0, 2.0, 2.0], 100) == "about 3 min left"  # 100 × 2 s, the 34 s warm-up left out
    assert eta_text(1, 151, 34.0) == "about 85 min left"  # what extrapolating the first step said
    assert step_eta([34.0, 2.0, 2.0, 2.0, 30.0], 10) == "about 20 s left"  # a median: one slow step moves it little
    assert step_eta([34.0, 1.0, 1.0, 1.0], 0) == ""
