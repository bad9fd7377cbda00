"""Shared fixtures: offline hub, small images, one cached tiny model per architecture."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from PIL import Image, ImageDraw

from workbench.core.models import VLM, load_vlm

_CACHE: dict[str, VLM] = {}


def _organism_layers() -> list[int]:
    import json

    from workbench.core.models import ORGANISM_DIR

    return list(range(json.loads((ORGANISM_DIR / "config.json").read_text())["text_config"]["num_hidden_layers"]))


ORGANISM_LAYERS = _organism_layers()  # every layer of the shipped organism's language model
# Stage I's suggested layers on organism:train with the shipped weights: what the app fills in (the model card's
# Stage I section). New weights change them; tests read them from here.
ORGANISM_SUGGESTED = "3,4"


def tiny(arch: str) -> VLM:
    """A tiny random model, built once per test session (building is deterministic)."""
    if arch not in _CACHE:
        _CACHE[arch] = load_vlm(f"tiny-random:{arch}", device="cpu")
    return _CACHE[arch]


def make_image(colour: str, size: tuple[int, int] = (40, 32), text: str = "") -> Image.Image:
    image = Image.new("RGB", size, colour)
    if text:
        ImageDraw.Draw(image).text((2, 2), text, fill="black")
    return image


@pytest.fixture
def images() -> list[Image.Image]:
    return [make_image("red"), make_image("blue", (64, 48)), make_image("white", text="bomb")]



@pytest.fixture(scope="session")
def organism_app(tmp_path_factory: pytest.TempPathFactory):
    """The app on its default model (the organism), with a fresh runs folder: (url, runs folder, app pid)."""
    from workbench.app.process import start_app

    runs = tmp_path_factory.mktemp("runs")
    process, url = start_app("organism", str(runs))
    try:
        yield url, runs, process.pid
    finally:
        process.terminate()
        process.wait(timeout=20)


def rigged_yes_no_judge(folder: Path, tokenizer: Any, scores: dict[str, float]) -> str:
    """A Llama classifier whose answer logit for each token in `scores` is that score times one positive constant
    (its layers pass the last prompt token through, its head is zero elsewhere): the judge's reading decides."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.evaluate.judges import HARMBENCH_PROMPT

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        last = tokenizer(HARMBENCH_PROMPT.format(behavior="b", generation="g"))["input_ids"][-1]
        embedding = model.model.embed_tokens.weight[last]
        pushed = embedding / embedding.pow(2).mean().sqrt() * model.model.norm.weight
        model.lm_head.weight.zero_()
        for token, score in scores.items():
            model.lm_head.weight[tokenizer.convert_tokens_to_ids(token)] = pushed * score
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
