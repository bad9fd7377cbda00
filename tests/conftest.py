"""Shared fixtures: offline hub, small images, one cached tiny model per architecture."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
from PIL import Image, ImageDraw

from workbench.models import VLM, load_vlm

_CACHE: dict[str, VLM] = {}


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
