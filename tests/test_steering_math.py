"""The three steering rules on hand-made hidden states, and what generate's options do to the tokens."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny

from workbench.steer import steering as S
from workbench.steer.steering import Part, generate, generate_ids, steer_hidden, steer_layer


def test_additive_moves_along_the_unit_direction() -> None:
    hidden = torch.zeros(2, 3, 4)
    direction = torch.tensor([0.0, 2.0, 0.0, 0.0])
    out = steer_hidden(hidden, direction, "additive", -1.5)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, -1.5, 0.0, 0.0]))


def test_ablation_removes_the_projection_and_keeps_the_rest() -> None:
    hidden = torch.tensor([[3.0, 4.0, 5.0]])
    out = steer_hidden(hidden, torch.tensor([0.0, 10.0, 0.0]), "ablation", 1.0)
    torch.testing.assert_close(out, torch.tensor([[3.0, 0.0, 5.0]]))


def test_adaptive_steers_only_what_leans_harmful() -> None:
    direction = torch.tensor([1.0, 0.0])
    calibration = torch.tensor([0.0, 1.0])
    harmful_lean = torch.tensor([[2.0, 1.0]])  # h - h̄ = (2, 0): cos = 1
    benign_lean = torch.tensor([[-2.0, 1.0]])  # cos < 0: untouched
    out = steer_hidden(harmful_lean, direction, "adaptive", 0.5, calibration)
    expected = harmful_lean - 0.5 * 1.0 * harmful_lean.norm() * direction
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(steer_hidden(benign_lean, direction, "adaptive", 0.5, calibration), benign_lean)


def test_bf16_hidden_states_stay_bf16() -> None:
    hidden = torch.randn(1, 2, 8, dtype=torch.bfloat16)
    out = steer_hidden(hidden, torch.randn(8), "adaptive", 1.0, torch.zeros(8))
    assert out.dtype == torch.bfloat16


def test_steer_at_picks_the_decoding_steps_that_are_steered() -> None:
    from conftest import tiny

    from workbench.steer.steering import Steering, generate_ids
    from workbench.steer.vectors import SteeringVector

    vlm = tiny("llava")
    vector = SteeringVector({1: torch.randn(vlm.hidden_size, generator=torch.Generator().manual_seed(4))})
    items = [(None, "hello there"), (None, "what is this")]
    plain = generate_ids(vlm, items, None, max_new_tokens=6)
    runs = {at: generate_ids(vlm, items, Steering(vector, "additive", 60.0, steer_at=at), max_new_tokens=6)
            for at in ("all", "prompt", "generated")}
    for row in range(len(items)):
        assert runs["generated"][row][0] == plain[row][0]  # the first token comes from the unsteered prefill
        assert runs["generated"][row][1:] != plain[row][1:]  # and the steered steps after it
        assert runs["prompt"][row][0] == runs["all"][row][0] != plain[row][0]  # the prefill is steered
    # (on this tiny model a steered prefill already fixes every later token, so prompt and all agree on tokens)


def test_compare_puts_each_prompt_beside_its_plain_and_steered_generation() -> None:
    from conftest import make_image, tiny

    from workbench.steer.steering import Steering, compare, generate, steered_logits
    from workbench.steer.vectors import SteeringVector

    vlm = tiny("llava")
    generator = torch.Generator().manual_seed(1)
    vector = SteeringVector({1: torch.randn(32, generator=generator)}, {1: torch.zeros(32)}, {"num_layers": 3})
    steering = Steering(vector, "additive", 8.0)
    items = [(make_image("red"), "what is this"), (None, "tell me a story")]
    rows = compare(vlm, items, steering, max_new_tokens=4)
    assert [row.prompt for row in rows] == ["what is this", "tell me a story"]
    assert [row.unsteered for row in rows] == generate(vlm, items, None, max_new_tokens=4)
    assert [row.steered for row in rows] == generate(vlm, items, steering, max_new_tokens=4)
    assert [row.changed for row in rows] == [row.unsteered != row.steered for row in rows] and any(
        row.changed for row in rows)
    with torch.no_grad():
        encoding = vlm.encode(items[1:])
        plain = vlm.hf_model(**encoding).logits
        torch.testing.assert_close(steered_logits(vlm, encoding, Steering(vector * 0, "additive", 8.0)), plain)
        assert not torch.allclose(steered_logits(vlm, encoding, steering), plain)
    with pytest.raises(ValueError, match="^teacher-forced scoring under steer_at='prompt' needs the response "
                                         r"positions \(`steered_positions`\)$"):
        steered_logits(vlm, encoding, Steering(vector, "additive", 8.0, steer_at="prompt"))


def test_steering_for_says_where_each_setting_came_from() -> None:
    from workbench.steer.steering import steering_for
    from workbench.steer.vectors import SteeringVector

    trained = SteeringVector({1: torch.ones(4), 2: torch.ones(4)}, {1: torch.zeros(4), 2: torch.zeros(4)},
                             {"num_layers": 3, "steering": {"mode": "additive", "alpha": 2.0, "layers": [1, 2]}})
    steering, line = steering_for(trained)
    assert (steering.mode, steering.alpha, steering.layers, steering.steer_at) == ("additive", 2.0, (1, 2), "all")
    assert line == ("steering: mode additive (from the vector), alpha 2 (from the vector), layers 1,2 (from the "
                    "vector), steer_at all (default)")
    steering, line = steering_for(trained, "adaptive", 2.0, [1, 2], "prompt")  # layers given as a list: the same
    assert (steering.mode, steering.layers, steering.steer_at) == ("adaptive", (1, 2), "prompt")
    assert line == ("steering: mode adaptive (given; the vector was made for additive), alpha 2 (given), layers 1,2 "
                    "(given), steer_at prompt (given)")
    _, line = steering_for(trained, layers=[1])
    assert "layers 1 (given; the vector was made for 1,2)" in line
    steering, line = steering_for(SteeringVector({1: torch.ones(4)}, {1: torch.zeros(4)}, {"num_layers": 3}))
    assert (steering.mode, steering.alpha, steering.layers) == ("adaptive", 1.0, None)
    assert line == "steering: mode adaptive (default), alpha 1 (default), layers all (default), steer_at all (default)"


def test_steering_defaults_to_the_layers_stage1_suggested() -> None:
    """Unset layers: Stage II's recorded layers, else Stage I's suggestion, else every layer (issue 45)."""
    from workbench.steer.steering import SUGGESTED, steering_for
    from workbench.steer.vectors import SteeringVector

    def vector(**metadata: object) -> SteeringVector:
        layers = range(3)
        return SteeringVector({i: torch.ones(4) for i in layers}, {i: torch.zeros(4) for i in layers},
                              {"num_layers": 3, **metadata})

    steering, line = steering_for(vector(**{SUGGESTED: [1]}))
    assert steering.layers == (1,) and "layers 1 (suggested by Stage I)" in line
    assert steering_for(vector(**{SUGGESTED: [1]}), layers=[0, 2])[0].layers == (0, 2)  # given wins
    trained = vector(**{SUGGESTED: [1], "steering": {"layers": [0, 1]}})
    assert steering_for(trained)[0].layers == (0, 1)  # what Stage II trained with wins over Stage I's suggestion
    steering, line = steering_for(vector(**{SUGGESTED: []}))
    assert steering.layers is None and "layers all (default; Stage I found no layer that separates)" in line
    assert steering_for(vector(**{SUGGESTED: [1]}).select([0, 2]))[0].layers is None  # a cut vector: its own layers


def test_layer_text_parses_as_a_user_types_it() -> None:
    from workbench.steer.steering import parse_layers

    assert parse_layers(None) is None and parse_layers("") is None and parse_layers("  ") is None
    assert parse_layers("1, 2") == (1, 2) and parse_layers(" 3 ,4,") == (3, 4) and parse_layers("1 2") == (1, 2)
    with pytest.raises(ValueError) as error:
        parse_layers("1;2")
    assert str(error.value) == "layers must be comma-separated whole numbers such as 1,2, got '1;2'"
    from workbench.steer.steering import parse_strengths

    assert parse_strengths("-1, 0 2.5,") == [-1.0, 0.0, 2.5] and parse_strengths(" ") == []
    with pytest.raises(ValueError) as error:
        parse_strengths("1,x")
    assert str(error.value) == "strengths must be comma-separated numbers, got '1,x'"


def test_sums_of_vectors_count_their_summands() -> None:
    from workbench.steer.vectors import SteeringVector

    v = SteeringVector({0: torch.ones(3)}, {0: torch.zeros(3)}, {"num_layers": 2})
    assert (v + v).metadata["summands"] == 2 and ((v + v) + v).metadata["summands"] == 3


def test_a_steering_describes_itself_with_the_settings_every_figure_is_labelled_with() -> None:
    """describe() is what eval's metrics.json, the run info and the token view print next to each number."""
    from workbench.steer.steering import Steering
    from workbench.steer.vectors import SteeringVector

    vector = SteeringVector({0: torch.ones(4), 2: torch.ones(4)}, {0: torch.zeros(4), 2: torch.zeros(4)})
    assert Steering(vector, "adaptive", 1.5, (2,), steer_at="generated").describe() == {
        "mode": "adaptive", "alpha": 1.5, "layers": [2], "steer_at": "generated"}
    assert Steering(vector, "additive", -4.0).describe() == {"mode": "additive", "alpha": -4.0, "layers": [0, 2],
                                                            "steer_at": "all"}


# --- generate's options: what each does to the tokens a user gets ---------------------------------------------

ITEMS = [(None, "hello there"), (None, "what is this"), (None, "tell me a story about a dog")]


def test_length_bounds_and_the_default_length(monkeypatch) -> None:
    vlm = tiny("llava")
    eos = vlm.tokenizer.eos_token_id
    assert [len(ids) for ids in generate_ids(vlm, ITEMS[:1], suppress_tokens=[eos])] == [32]  # the default
    longer = generate_ids(vlm, ITEMS[:1], max_new_tokens=33)[0]
    assert len(longer) == 33  # this prompt runs past 32 tokens without an end token, so the text shows the length
    assert generate(vlm, ITEMS[:1]) == vlm.decode([longer[:32]])  # generate's own default is the same 32
    assert [len(ids) for ids in generate_ids(vlm, ITEMS[:1], max_new_tokens=1)] == [1]  # one token is allowed
    monkeypatch.setattr(S, "MAX_NEW_TOKENS", 3)
    assert len(generate_ids(vlm, ITEMS[:1], max_new_tokens=3, suppress_tokens=[eos])[0]) == 3  # the cap itself
    for wrong in (0, 4):
        with pytest.raises(ValueError) as error:
            generate_ids(vlm, ITEMS[:1], max_new_tokens=wrong)
        assert str(error.value) == f"max_new_tokens must be between 1 and 3, got {wrong}"


def test_sampling_settings_reach_the_sampler() -> None:
    vlm = tiny("llava")
    greedy = generate_ids(vlm, ITEMS, max_new_tokens=8)
    sampled = generate_ids(vlm, ITEMS, max_new_tokens=8, do_sample=True)
    assert sampled != greedy  # a random tiny model's next-token distribution is nearly flat
    assert sampled == generate_ids(vlm, ITEMS, max_new_tokens=8, do_sample=True, temperature=1.0, top_p=1.0, seed=0)
    assert generate_ids(vlm, ITEMS, max_new_tokens=8, do_sample=True, seed=1) != sampled
    assert generate_ids(vlm, ITEMS, max_new_tokens=8, do_sample=True, top_p=1e-9) == greedy  # only the top token
    assert generate_ids(vlm, ITEMS, max_new_tokens=8, do_sample=True, temperature=1e-4) == greedy
    texts = generate(vlm, ITEMS, max_new_tokens=8, do_sample=True)
    assert texts == generate(vlm, ITEMS, max_new_tokens=8, do_sample=True, temperature=1.0, top_p=1.0, seed=0)
    assert texts != generate(vlm, ITEMS, max_new_tokens=8)
    assert generate(vlm, ITEMS, max_new_tokens=8, do_sample=True, top_p=1e-9) == generate(vlm, ITEMS, max_new_tokens=8)
    for wrong in (0.0, -1.0):
        with pytest.raises(ValueError) as error:
            generate_ids(vlm, ITEMS[:1], do_sample=True, temperature=wrong)
        assert str(error.value) == f"temperature must be positive when sampling, got {wrong}"
    assert generate_ids(vlm, ITEMS[:1], max_new_tokens=2, do_sample=True, temperature=0.5)  # any positive one


def test_suppressed_tokens_never_appear_and_the_system_prompt_is_used() -> None:
    vlm = tiny("llava")
    greedy = generate_ids(vlm, ITEMS, max_new_tokens=6)
    first = greedy[0][0]
    suppressed = generate_ids(vlm, ITEMS, max_new_tokens=6, suppress_tokens=[first])
    assert all(first not in ids for ids in suppressed) and suppressed != greedy
    plain = generate(vlm, ITEMS, max_new_tokens=6)
    told = generate(vlm, ITEMS, max_new_tokens=6, system="you are a careful assistant")
    assert told != plain
    ids = generate_ids(vlm, ITEMS, max_new_tokens=6, system="you are a careful assistant")
    assert told == [vlm.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def test_answers_end_at_any_of_the_models_end_ids() -> None:
    """Chat models list several end ids in generation_config (e.g. Llama 3's <|eot_id|>): each ends an answer."""
    vlm = tiny("llava")
    greedy = generate_ids(vlm, ITEMS, max_new_tokens=8)
    stop = next(token for token in greedy[0][1:] if token not in greedy[1] + greedy[2])
    config = vlm.hf_model.generation_config
    before = config.eos_token_id
    config.eos_token_id = [vlm.tokenizer.eos_token_id, stop]
    try:
        ended = generate_ids(vlm, ITEMS, max_new_tokens=8)
    finally:
        config.eos_token_id = before
    assert ended[0] == greedy[0][:greedy[0].index(stop) + 1]  # cut right after it, no padding left behind
    assert ended[1:] == greedy[1:]


def test_two_summands_keep_a_half_precision_hidden_states_dtype() -> None:
    hidden = torch.randn(2, 3, 8).to(torch.bfloat16)
    parts = [Part(torch.ones(8), None, 1.0), Part(torch.eye(8)[0], None, 2.0)]
    steered = steer_layer(hidden, parts, "additive")
    assert steered.dtype == torch.bfloat16
    torch.testing.assert_close(steered.float(), hidden.float() + torch.ones(8) / 8 ** 0.5 + 2 * torch.eye(8)[0],
                               atol=0.05, rtol=0.02)


def test_steered_generation_is_quiet_and_auto_batches_give_the_same_answers() -> None:
    """nnsight warns when a step loop outlives generation (it always does when answers end early): the user should
    not see that on every call; an "auto" batch size changes speed, not answers."""
    import warnings

    from workbench.steer.vectors import SteeringVector

    vlm = tiny("llava")
    vector = SteeringVector({1: torch.ones(vlm.hidden_size)}, {1: torch.zeros(vlm.hidden_size)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steered = generate_ids(vlm, ITEMS, S.Steering(vector, "additive", 4.0), max_new_tokens=8)
    assert not [w for w in caught if "was never reached" in str(w.message)]
    assert generate_ids(vlm, ITEMS, S.Steering(vector, "additive", 4.0), max_new_tokens=8, batch_size="auto") == steered


def test_each_finished_batch_is_heard_with_its_indices_and_answers() -> None:
    """What eval streams to disk: every input once, under its own index, with the answer it gets in the result."""
    vlm = tiny("llava")
    heard: list[tuple[list[int], list[list[int]]]] = []
    items = [*ITEMS, (None, "one more question here")]
    ids = generate_ids(vlm, items, max_new_tokens=4, batch_size=2, on_batch=lambda i, a: heard.append((i, a)))
    assert len(heard) == 2 and sorted(i for indices, _ in heard for i in indices) == [0, 1, 2, 3]
    for indices, answers in heard:
        assert answers == [ids[i] for i in indices]


def test_steer_at_last_is_astras_hook_and_teacher_forcing_reproduces_every_steer_at() -> None:
    """`last` steers h[:, -1, :] of every forward call, as ASTRA's hook does (compared token for token with a plain
    PyTorch hook); one teacher-forced pass with `steered_positions` re-predicts the steered greedy tokens under
    every steer_at (Stage II trains on exactly what generation did)."""
    from conftest import make_image, tiny

    from workbench.steer.steering import STEER_AT, Steering, generate_ids, steered_logits, steered_positions
    from workbench.steer.teacher_forcing import pack_responses
    from workbench.steer.vectors import SteeringVector

    vlm = tiny("llava")
    direction = torch.randn(32, generator=torch.Generator().manual_seed(3))
    benign_mean = torch.randn(32, generator=torch.Generator().manual_seed(4))
    vector = SteeringVector({1: direction}, {1: benign_mean}, {"num_layers": 3})
    items = [(make_image("red"), "what is this"), (make_image("blue"), "what colour is it now")]
    steering = Steering(vector, "adaptive", 3.0, (1,), steer_at="last")

    def astra_hook(module, inputs, output):  # ASTRA's steer_eval hook ('projection'), per row
        h = output[:, -1, :].float()
        lean = ((h - benign_mean) @ direction) / (h - benign_mean).norm(dim=-1) / direction.norm()
        push = lean.clamp(0, 1) * h.norm(dim=-1) * 3.0
        output = output.clone()
        output[:, -1, :] = (h - push[:, None] * direction / direction.norm()).to(output.dtype)
        return output

    handle = vlm.layer_module(1).register_forward_hook(astra_hook)
    try:
        hooked = generate_ids(vlm, items, None, max_new_tokens=8)
    finally:
        handle.remove()
    plain = generate_ids(vlm, items, None, max_new_tokens=8)
    ours = generate_ids(vlm, items, steering, max_new_tokens=8)
    assert ours == hooked != plain
    assert generate_ids(vlm, items, Steering(vector, "adaptive", 3.0, (1,)), max_new_tokens=8) != ours  # not `all`
    strong = SteeringVector({1: direction}, {1: torch.zeros(32)}, {"num_layers": 3})
    for at in STEER_AT:
        steered = Steering(strong, "additive", 20.0, (1,), steer_at=at)
        ids = generate_ids(vlm, items, steered, max_new_tokens=6)
        packed, is_response = pack_responses(vlm, items, ids)
        with torch.no_grad():
            logits = steered_logits(vlm, packed, steered, steered_positions(at, is_response))
        scored = is_response[:, 1:]
        assert torch.equal(logits[:, :-1].argmax(-1)[scored], packed["input_ids"][:, 1:][scored]), at


def test_steered_positions_marks_what_generation_steered() -> None:
    from workbench.steer.steering import steered_positions

    response = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 1, 1, 1]], dtype=torch.bool)  # prompt then answer
    assert steered_positions("generated", response).tolist() == response.tolist()
    assert steered_positions("prompt", response).int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]
    assert steered_positions("last", response).int().tolist() == [[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert steered_positions("all", response).all()
