"""What generate's options do to the tokens a user gets: length bounds, sampling settings, suppressed tokens, the
system prompt, every end-of-text id; and that two summands keep a half-precision model's dtype."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny

from workbench import steering as S
from workbench.steering import Part, generate, generate_ids, steer_layer

ITEMS = [(None, "hello there"), (None, "what is this"), (None, "tell me a story about a dog")]


def test_length_bounds_and_the_default_length(monkeypatch) -> None:
    vlm = tiny("llava")
    eos = vlm.tokenizer.eos_token_id
    assert [len(ids) for ids in generate_ids(vlm, ITEMS[:1], suppress_tokens=[eos])] == [32]  # the default
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
