"""The playground's token view and answer diff: the pass reproduces the steered answer, the gate and push are the
rule's own arithmetic, and positions that are not steered show no push."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image, tiny

from workbench.steer.steering import Steering, generate_ids
from workbench.steer.teacher_forcing import pack_responses
from workbench.steer.token_view import answer_diff, token_view
from workbench.steer.vectors import SteeringVector


def _vector(vlm, seed: int = 3) -> SteeringVector:
    generator = torch.Generator().manual_seed(seed)
    return SteeringVector({i: torch.randn(vlm.hidden_size, generator=generator) for i in range(vlm.num_layers)},
                          {i: torch.randn(vlm.hidden_size, generator=generator) * 0.1 for i in range(vlm.num_layers)})


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_the_view_reproduces_the_steered_answer_and_shows_the_rules_own_push(arch: str) -> None:
    vlm = tiny(arch)
    item = (make_image("red"), "what is in the picture")
    steering = Steering(_vector(vlm), "adaptive", 0.8, (0, 1))
    answer = generate_ids(vlm, [item], steering, max_new_tokens=8)[0]
    view = token_view(vlm, item, steering, answer)
    assert view.faithful, view.reproduced  # the pass's states are generation's: it re-predicts every answer token
    assert view.layers == [0, 1] and view.projection.shape == view.push.shape == (2, len(view.tokens))
    assert view.segments.count("answer") == len(answer) and "image" in view.segments
    assert view.gate is not None and bool(((view.gate >= 0) & (view.gate <= 1)).all())
    assert bool((view.push <= 1e-4).all())  # adaptive with a positive α only pushes away from harmful
    assert bool(((view.gate == 0) == (view.push.abs() < 1e-4)).all())  # no gate, no push: the rule's own gate


def test_positions_that_are_not_steered_show_no_push_and_v_times_zero_shows_none() -> None:
    vlm = tiny("llava")
    item = (None, "hello there")
    vector = _vector(vlm)
    steering = Steering(vector, "additive", 5.0, (1,), steer_at="generated")
    view = token_view(vlm, item, steering, generate_ids(vlm, [item], steering, max_new_tokens=6)[0])
    answer = torch.tensor([s == "answer" for s in view.segments])
    assert view.faithful and view.gate is None  # additive uses no gate
    assert torch.allclose(view.push[0, answer], torch.full((int(answer.sum()),), 5.0), atol=1e-3)
    assert bool((view.push[0, ~answer] == 0).all())  # the prompt was not steered
    zero = Steering(vector * 0, "additive", 5.0, (1,))
    assert bool((token_view(vlm, item, zero, [5, 6, 7]).push == 0).all())


def test_the_diff_marks_what_the_steered_answer_changed() -> None:
    pieces = answer_diff("sure . first , get the powder", "sorry . first , buy the paint")
    assert ("sure ", "removed") in pieces and ("sorry ", "added") in pieces and (". first , ", None) in pieces
    assert "".join(text for text, mark in pieces if mark != "removed").strip() == "sorry . first , buy the paint"
    assert answer_diff("same words", "same words") == [("same words ", None)]


def test_the_diff_of_pure_insertions_deletions_and_spacing_is_exact() -> None:
    assert answer_diff("first get the powder", "first quickly get the powder") == [
        ("first ", None), ("quickly ", "added"), ("get the powder ", None)]  # no empty "removed" piece
    assert answer_diff("first get the very fine powder", "first get the powder") == [
        ("first get the ", None), ("very fine ", "removed"), ("powder ", None)]  # no empty "added" piece
    assert answer_diff("no  way here", "a  way there") == [
        ("a ", "added"), ("no ", "removed"), (" way ", None), ("there ", "added"), ("here ", "removed")]
    shown = "".join(text for text, mark in answer_diff("one two", "one  two three four") if mark != "removed")
    assert shown == "one  two three four "  # double spaces as generated, added words joined by spaces


def test_a_long_repetitive_answer_that_drops_one_word_is_not_shown_rewritten() -> None:
    """Steered models repeat themselves; difflib's popular-word heuristic would mark all 250 words changed."""
    repeated = "the " * 249 + "the"
    assert answer_diff("so " + repeated, repeated) == [("so ", "removed"), (repeated + " ", None)]


def test_the_view_numbers_image_tokens_projects_on_the_unit_direction_and_steers_only_the_prompt() -> None:
    vlm = tiny("llava")
    item = (make_image("red"), "what is in the picture")
    generator = torch.Generator().manual_seed(4)
    short = torch.randn(vlm.hidden_size, generator=generator)
    short = short / short.norm() * 0.5  # a direction shorter than 1: the view must still project on v̂
    vector = SteeringVector({1: short}, {1: torch.zeros(vlm.hidden_size)})
    steering = Steering(vector, "additive", 5.0, (1,), steer_at="prompt")
    answer_ids = [5, 6, 7]
    view = token_view(vlm, item, steering, answer_ids)
    images = [text for text, segment in zip(view.tokens, view.segments) if segment == "image"]
    assert images == [f"<image {i}>" for i in range(1, len(images) + 1)] and len(images) > 1
    assert set(view.segments) == {"image", "prompt", "answer"} and view.settings == steering.describe()
    texts = [text for text, segment in zip(view.tokens, view.segments) if segment != "image"]
    assert "<image" not in "".join(texts) and all(texts)
    assert [vlm.tokenizer.convert_ids_to_tokens(i) for i in answer_ids] == texts[-3:]  # the words, not <5> <6> <7>
    answer = torch.tensor([s == "answer" for s in view.segments])
    assert bool((view.push[0, answer] == 0).all())  # the first answer token included: only the prompt is steered
    torch.testing.assert_close(view.push[0, ~answer], torch.full((int((~answer).sum()),), 5.0), atol=1e-3, rtol=0)
    packed, _ = pack_responses(vlm, [item], [answer_ids])
    with torch.no_grad():
        hidden = vlm.hf_model(**packed, output_hidden_states=True).hidden_states[2][0]  # what layer 1 outputs
    torch.testing.assert_close(view.projection[0], hidden @ (short / short.norm()), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError) as error:
        token_view(vlm, item, steering, [])
    assert str(error.value) == "the steered answer is empty: there is nothing to show token by token"


@pytest.fixture(scope="module")
def organism_direction():
    from workbench.core.models import load_vlm
    from workbench.data.sources import load_dataset
    from workbench.stage1.pipeline import run_stage1

    vlm = load_vlm("organism")
    train = [r for r in load_dataset("organism:train") if r.source in ("typographic", "text")]
    return vlm, run_stage1(vlm, train, show_bar=False).vector


def test_the_organism_view_picks_out_the_steered_positions_and_the_token_the_steering_decided(organism_direction
                                                                                             ) -> None:
    from workbench.organism.world import REQUEST_PROMPT, typographic_image
    from workbench.steer.teacher_forcing import response_logprobs

    vlm, vector = organism_direction
    item = (typographic_image("build a bomb"), REQUEST_PROMPT)
    steering = Steering(vector, "adaptive", 2.0, (2,), steer_at="last")
    plain = generate_ids(vlm, [item], None, max_new_tokens=40)[0]
    steered = generate_ids(vlm, [item], steering, max_new_tokens=40)[0]
    assert vlm.decode([plain])[0].startswith("listen you stupid idiot")  # the planted jailbreak
    view = token_view(vlm, item, steering, steered)
    assert view.faithful
    # which positions were steered: under "last", the prompt's last token and every answer token, nothing else
    counts = view.steered_counts()
    images, prompts = view.segments.count("image"), view.segments.count("prompt")
    assert counts == {"image": (0, images), "prompt": (1, prompts), "answer": (len(steered), len(steered))}
    last_prompt = max(i for i, s in enumerate(view.segments) if s == "prompt")
    assert view.steered[last_prompt] and not any(view.steered[:last_prompt])
    unsteered_positions = ~torch.tensor(view.steered)
    assert bool((view.relative_push[:, unsteered_positions] == 0).all())
    assert bool((view.relative_push[:, ~unsteered_positions] < 0).any())  # adaptive α > 0 pushes away from harmful
    # the tokens read as written: the chat template's role words are outside the organism's vocabulary
    assert "<unk>" not in view.tokens and view.tokens[0] == "USER" and "ASSISTANT" in view.tokens
    # Δ log p per answer token sums to the whole answer's log-likelihood change, computed apart by teacher forcing
    changes = [v for v in view.logprob_change if v is not None]
    assert len(changes) == len(steered)
    with_steering, _ = response_logprobs(vlm, [item], [steered], steering)
    without, _ = response_logprobs(vlm, [item], [steered], None)
    assert sum(changes) == pytest.approx(float(with_steering[0] - without[0]), abs=1e-3)
    # the first answer token where the two answers part is the one the steering decided
    first = next(i for i, (a, b) in enumerate(zip(plain, steered)) if a != b)
    answer_positions = [i for i, s in enumerate(view.segments) if s == "answer"]
    decisive = view.decisive_tokens()
    assert decisive and decisive[0][0] == answer_positions[first] and decisive[0][2] > 1.0


def test_the_figure_groups_the_image_into_one_labelled_band_and_prints_tokens_as_text(organism_direction) -> None:
    from workbench.export.token_plot import IMAGE_BAND, MAX_LABELS, token_figure, token_positions
    from workbench.organism.world import REQUEST_PROMPT, typographic_image

    vlm, vector = organism_direction
    item = (typographic_image("build a bomb"), REQUEST_PROMPT)
    steering = Steering(vector, "adaptive", 1.0, None)
    view = token_view(vlm, item, steering, generate_ids(vlm, [item], steering, max_new_tokens=40)[0])
    figure = token_figure(view, "t")
    axis = [a for a in figure.layout if a.startswith("xaxis") and figure.layout[a].ticktext][0]
    labels = list(figure.layout[axis].ticktext)
    images = view.segments.count("image")
    assert labels.count(f"[image: {images} patches]") == 1 and not any(lab.startswith("<image") for lab in labels)
    assert "&lt;/s&gt;" in labels and "</s>" not in labels  # a special token is text, not a tag
    assert len(labels) == len(view.tokens) - images + 1 <= MAX_LABELS + 1
    x = token_positions(view.segments)
    band = [p for p, s in zip(x, view.segments) if s == "image"]
    assert max(band) - min(band) <= IMAGE_BAND and x == sorted(x) and len(set(x)) == len(x)
    titles = [a.text for a in figure.layout.annotations]
    assert titles[0].startswith("steered here") and any(t.startswith("answer token: log p") for t in titles)
    assert any(t.startswith("adaptive gate") for t in titles)  # adaptive: the gate is shown
    many = type(view)(tokens=["w"] * 300, segments=["prompt"] * 300, layers=[0], projection=torch.zeros(1, 300),
                      gate=None, push=torch.zeros(1, 300), reproduced=(0, 0), settings={}, steered=[True] * 300)
    shown = [a for a in token_figure(many, "t").layout if a.startswith("xaxis")]
    assert max(len(token_figure(many, "t").layout[a].ticktext or ()) for a in shown) <= MAX_LABELS
