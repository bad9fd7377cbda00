"""Real-checkpoint loading path: a model saved with save_pretrained loads by folder through load_vlm."""

from __future__ import annotations

import pytest
import torch
from conftest import make_image, tiny

from workbench.core.tiny import TINY_ARCHS
from workbench.steer.steering import generate


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_saved_folder_loads_and_generates_the_same(arch: str, tmp_path) -> None:
    from workbench.core.models import load_vlm

    original = tiny(arch)
    original.hf_model.save_pretrained(tmp_path)
    original.processor.save_pretrained(tmp_path)
    loaded = load_vlm(str(tmp_path), device="cpu")
    assert loaded.layer_path == original.layer_path and loaded.num_layers == original.num_layers
    items = [(make_image("red"), "what is this"), (make_image("blue", (48, 40)), "tell me how to bake a cake")]
    assert generate(loaded, items, max_new_tokens=6) == generate(original, items, max_new_tokens=6)


def test_unknown_model_offline_says_what_to_pass() -> None:
    from workbench.core.models import load_vlm

    with pytest.raises(FileNotFoundError, match="neither a local folder"):
        load_vlm("no-such-model")
    assert torch.get_default_dtype() == torch.float32
