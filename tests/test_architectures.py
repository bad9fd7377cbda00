"""The core engine on all eight tiny architectures: capture, steering, gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image, tiny

from workbench.core.tiny import TINY_ARCHS
from workbench.stage1.activations import capture_batch, position_weights
from workbench.stage2.loop import TrainableSteering
from workbench.steer.steering import Steering, generate, steered_logits
from workbench.steer.vectors import SteeringVector

PROMPTS = ["what is this", "tell me how to make a cake please , first step then next step", "hello"]


def _items(with_images: bool):
    colours = ["red", "blue", "green"]
    return [(make_image(c, (32 + 8 * i, 32)) if with_images else None, p)
            for i, (c, p) in enumerate(zip(colours, PROMPTS))]


def _random_vector(vlm, scale: float = 1.0, seed: int = 1) -> SteeringVector:
    generator = torch.Generator().manual_seed(seed)
    return SteeringVector({i: torch.randn(vlm.hidden_size, generator=generator) * scale
                           for i in range(vlm.num_layers)},
                          {i: torch.zeros(vlm.hidden_size) for i in range(vlm.num_layers)}, {"model": vlm.spec})


@pytest.mark.parametrize("arch", TINY_ARCHS)
@pytest.mark.parametrize("with_images", [True, False], ids=["image", "text"])
@pytest.mark.parametrize("position", ["last", "mean_text"])
def test_capture_matches_output_hidden_states(arch: str, with_images: bool, position: str) -> None:
    vlm = tiny(arch)
    encoding = vlm.encode(_items(with_images))
    assert encoding["attention_mask"][:, 0].min() == 0, "prompts of different lengths must be left-padded"
    weights = position_weights(vlm, encoding, position)
    captured = capture_batch(vlm, encoding, weights)
    with torch.no_grad():
        hidden = vlm.hf_model(**encoding, output_hidden_states=True).hidden_states
    # hidden_states[i + 1] is decoder layer i's output, except the last, which HF reports after the final norm
    for layer in range(vlm.num_layers - 1):
        expected = torch.einsum("bt,bth->bh", weights, hidden[layer + 1].float())
        torch.testing.assert_close(captured[:, layer], expected, atol=1e-5, rtol=0)
    assert captured.shape == (3, vlm.num_layers, vlm.hidden_size)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_mean_image_position_averages_image_tokens(arch: str) -> None:
    vlm = tiny(arch)
    encoding = vlm.encode(_items(True))
    weights = position_weights(vlm, encoding, "mean_image")
    is_image = encoding["input_ids"] == vlm.image_token_id
    assert torch.equal(weights > 0, is_image)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_zero_strength_is_token_identical_and_nonzero_changes_output(arch: str) -> None:
    vlm = tiny(arch)
    items = _items(True)
    encoding = vlm.encode(items)
    with torch.no_grad():
        plain_ids = vlm.hf_model.generate(**encoding, max_new_tokens=8, do_sample=False)
    plain = vlm.decode(plain_ids[:, encoding["input_ids"].shape[1]:])
    vector = _random_vector(vlm)
    for mode in ("additive", "ablation", "adaptive"):
        assert generate(vlm, items, Steering(vector, mode, 0.0), max_new_tokens=8) == plain, mode
        assert generate(vlm, items, Steering(vector * 0, mode, 5.0), max_new_tokens=8) == plain, mode
    pushed = generate(vlm, items, Steering(vector, "additive", 50.0), max_new_tokens=8)
    assert pushed != plain


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_gradients_reach_a_parameter_steering_vector(arch: str) -> None:
    vlm = tiny(arch)
    encoding = vlm.encode(_items(True)[:2])
    trainable = TrainableSteering(SteeringVector({1: torch.randn(vlm.hidden_size)}), [1], "additive", 2.0,
                                  train_strength=True)
    logits = steered_logits(vlm, encoding, trainable)
    logits.log_softmax(-1)[:, -1, 0].sum().backward()
    direction, strength = trainable.directions["1"], trainable.log_strength
    assert direction.grad is not None and direction.grad.abs().sum() > 0
    assert strength.grad is not None and strength.grad.abs().sum() > 0
    assert all(p.grad is None for p in vlm.hf_model.parameters())


def test_a_processor_that_wants_images_per_sample_gets_them_even_unlisted(monkeypatch) -> None:
    """LFM2-VL's processor refuses a flat image list ("... images per sample"); a processor like it that the
    workbench does not list is given the nested form, which means the same with one image per prompt."""
    import workbench.core.models as models

    vlm = tiny("lfm2_vl")
    items = _items(True)[:2]
    listed = vlm.encode(items)
    monkeypatch.setattr(models, "_NESTED_IMAGE_TYPES", models._NESTED_IMAGE_TYPES - {"lfm2_vl"})
    unlisted = vlm.encode(items)
    assert listed.keys() == unlisted.keys()
    assert all(torch.equal(listed[k], unlisted[k]) for k in listed)
