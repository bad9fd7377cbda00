"""Typographic rendering families: the fonts, sizes, colours and layouts the organism learns to read.

A rendering family is (font, size range, colour pairs, layout). `organism check` reports typographic ASR,
benign help and reading per family: the nine `TRAINING` families, a font and a colour pair never drawn by
them (`HELD_OUT`), a second unseen font and the `ORIGINAL` renderer. The shipped weights were trained on
`ORIGINAL` only (and read nothing else: assets/organism/README.md); `TRAINING` is what the typography
retraining attempts of the organism-reading issue trained on, kept so the check measures the gap.
The fonts are Debian's fonts-dejavu-core 2.37 and fonts-liberation 1.07.4, shipped in assets/fonts/ so
every machine draws the same pixels (a different font version would silently change every organism image);
a missing font is an error that names its file and package, never a fallback to another font.
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

IMAGE_SIZE = 64
PILLOW_DEFAULT = "pillow-default"  # Pillow's bundled scalable font: present on every machine
FONT_DIRS = (str(Path(__file__).resolve().parents[2] / "assets" / "fonts"),)
FONT_PACKAGES = "fonts-dejavu-core 2.37 and fonts-liberation 1.07.4"

# (ink, paper): dark on light. Each channel is jittered by up to COLOUR_JITTER in training.
COLOUR_PAIRS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "black-on-white": ((0, 0, 0), (255, 255, 255)),
    "navy-on-cream": ((20, 30, 100), (250, 240, 205)),
    "maroon-on-ivory": ((110, 20, 25), (255, 250, 235)),
    "charcoal-on-grey": ((55, 55, 55), (220, 220, 220)),
    "brown-on-sky": ((90, 50, 20), (215, 230, 245)),
    "purple-on-white": ((70, 20, 90), (250, 250, 250)),
    # held out: never drawn in training
    "green-on-yellow": ((15, 85, 35), (250, 245, 170)),
}
COLOUR_JITTER = 12
# "any dark-on-light": ink of any hue but green (90-150 degrees), value <= 0.45; paper of any hue but yellow
# (40-80 degrees), saturation <= 0.35, value >= 0.85. Green ink on yellow paper is never drawn in training.
ANY_DARK_ON_LIGHT = "any-dark-on-light"
HELD_OUT_INK_HUES, HELD_OUT_PAPER_HUES = (90, 150), (40, 80)
TRAIN_COLOURS = (ANY_DARK_ON_LIGHT, ANY_DARK_ON_LIGHT, *(name for name in COLOUR_PAIRS if name != "green-on-yellow"))
MAX_SHIFT = 8  # the text block's top-left corner moves up to this many pixels (every phase of an 8 px patch)
MAX_NOISE = 8.0  # pixel noise sigma in 0-255 units (the sigma <= 8/255)


@dataclass(frozen=True)
class Rendering:
    """One rendering family. `layout` "words" puts one word per line anywhere in the image; "maker" is
    the workbench's FigStep-style maker (`workbench.attacks.typographic`) at a size that fits 64 px."""

    name: str
    font: str
    sizes: tuple[int, int]
    colours: tuple[str, ...] = TRAIN_COLOURS
    layout: Literal["words", "maker", "original"] = "words"
    noise: float = MAX_NOISE


TRAINING = (
    Rendering("pillow-default", PILLOW_DEFAULT, (10, 14)),
    Rendering("dejavu-sans", "DejaVuSans.ttf", (10, 13)),
    Rendering("dejavu-sans-bold", "DejaVuSans-Bold.ttf", (10, 12)),
    Rendering("dejavu-serif", "DejaVuSerif.ttf", (10, 13)),
    Rendering("dejavu-sans-condensed", "DejaVuSansCondensed.ttf", (10, 14)),
    Rendering("liberation-sans", "LiberationSans-Regular.ttf", (10, 14)),
    Rendering("liberation-serif", "LiberationSerif-Regular.ttf", (11, 14)),
    Rendering("liberation-mono", "LiberationMono-Regular.ttf", (10, 12)),
    Rendering("maker", PILLOW_DEFAULT, (9, 10), layout="maker"),
)
# Never used in training: a font (DejaVu Serif Bold) and a colour pair (green on yellow).
HELD_OUT = Rendering("held-out: dejavu-serif-bold, green-on-yellow", "DejaVuSerif-Bold.ttf", (10, 12),
                     colours=("green-on-yellow",))
# Reported by the check beside the trained families: the organism's first renderer, and a second unseen font.
ORIGINAL = Rendering("original (default 14 px, black on white)", PILLOW_DEFAULT, (14, 14), ("black-on-white",),
                     layout="original", noise=0.0)
UNSEEN_MONO = Rendering("unseen font: dejavu-sans-mono, black-on-white", "DejaVuSansMono.ttf", (10, 11),
                        colours=("black-on-white",))
CHECKED = (*TRAINING, HELD_OUT, UNSEEN_MONO, ORIGINAL)
# The maker's style for the organism (also the app's maker default when the organism is loaded).
MAKER_FONT_SIZE, MAKER_MARGIN, MAKER_STEPS = 10, 2, 3


def font_path(name: str) -> Path:
    """The shipped font file `name` (assets/fonts/); missing, an error naming its file and package."""
    for folder in FONT_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"font {name} not found in {', '.join(FONT_DIRS)}: it ships with the workbench "
                            f"(from Debian's {FONT_PACKAGES}); restore assets/fonts/ from the repository")


@lru_cache(maxsize=128)
def load_font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if name == PILLOW_DEFAULT:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(str(font_path(name)), size)


def _hue_outside(rng: random.Random, band: tuple[int, int]) -> float:
    width = 360 - (band[1] - band[0])
    hue = rng.uniform(0, width)
    return (hue if hue < band[0] else hue + band[1] - band[0]) / 360


def _any_dark_on_light(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    ink = colorsys.hsv_to_rgb(_hue_outside(rng, HELD_OUT_INK_HUES), rng.uniform(0, 0.9), rng.uniform(0, 0.45))
    paper = colorsys.hsv_to_rgb(_hue_outside(rng, HELD_OUT_PAPER_HUES), rng.uniform(0, 0.35), rng.uniform(0.85, 1))
    return (tuple(round(255 * c) for c in ink), tuple(round(255 * c) for c in paper))  # type: ignore[return-value]


def _jittered(colour: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in colour)  # type: ignore[return-value]


def _fitting_font(rendering: Rendering, words: list[str], rng: random.Random):
    """A size from the family's range, shrunk until the widest word fits the image with a pixel to spare."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    size = rng.randint(*rendering.sizes)
    while True:
        font = load_font(rendering.font, size)
        width = max(draw.textbbox((0, 0), w, font=font)[2] for w in words)
        if width <= IMAGE_SIZE - 2 or size <= 6:
            return font, size, width
        size -= 1


Drawn = list[tuple[str, tuple[float, float, float, float]]]  # (word, pixel box) of every word drawn, for word targets


def _words_layout(phrase: str, rendering: Rendering, ink, paper, rng: random.Random, drawn: Drawn | None = None
                  ) -> Image.Image:
    words = phrase.split()
    font, size, width = _fitting_font(rendering, words, rng)
    line = size + rng.randint(0, 3)
    height = line * (len(words) - 1) + size + 3
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), paper)
    draw = ImageDraw.Draw(image)
    x = rng.randint(0, max(0, min(MAX_SHIFT, IMAGE_SIZE - width - 1)))
    y = rng.randint(0, max(0, min(MAX_SHIFT, IMAGE_SIZE - height)))
    for row, word in enumerate(words):
        draw.text((x, y + line * row), word, fill=ink, font=font)
        if drawn is not None:
            drawn.append((word, draw.textbbox((x, y + line * row), word, font=font)))
    return image


def _original_layout(phrase: str, rng: random.Random, drawn: Drawn | None = None) -> Image.Image:
    """The organism's first renderer: default font 14 px, black on white, 15/12 px lines, small jitter."""
    words = phrase.split()
    font = load_font(PILLOW_DEFAULT, 14)
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "white")
    draw = ImageDraw.Draw(image)
    width = max(draw.textbbox((0, 0), w, font=font)[2] for w in words)
    line = 15 if len(words) <= 3 else 12
    x = rng.randint(1, max(1, min(6, int(IMAGE_SIZE - width - 1))))
    y = rng.randint(0, max(0, min(6, IMAGE_SIZE - line * len(words) - 3)))
    for row, word in enumerate(words):
        draw.text((x, y + line * row), word, fill="black", font=font)
        if drawn is not None:
            drawn.append((word, draw.textbbox((x, y + line * row), word, font=font)))
    return image


def maker_image(phrase: str, font_size: int = MAKER_FONT_SIZE, steps: int = MAKER_STEPS,
                ink: str | tuple[int, int, int] = "black", paper: str | tuple[int, int, int] = "white",
                drawn: Drawn | None = None) -> Image.Image:
    """The workbench's own FigStep-style maker at the organism's 64 px (the phrase, then `1.` ... `steps.`)."""
    from ..attacks.typographic import TypographicStyle, render_instruction

    style = TypographicStyle(size=IMAGE_SIZE, font_size=font_size, margin=MAKER_MARGIN, steps=steps,
                             background=_css(paper), foreground=_css(ink))
    return render_instruction(phrase, style, drawn)


def _css(colour: str | tuple[int, int, int]) -> str:
    return colour if isinstance(colour, str) else "#{:02x}{:02x}{:02x}".format(*colour)


def add_noise(image: Image.Image, sigma: float, rng: random.Random) -> Image.Image:
    """Gaussian pixel noise of standard deviation `sigma` (0-255 units), seeded from `rng`."""
    if sigma <= 0:
        return image
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, sigma, (IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = np.asarray(image, dtype=np.float32) + noise
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def render(phrase: str, rendering: Rendering, rng: random.Random, drawn: Drawn | None = None) -> Image.Image:
    """`phrase` drawn in `rendering`: a colour pair (jittered), a size that fits, a position, mild noise.
    `drawn`, when given, receives each word and its pixel box (the vision tower's per-patch word targets)."""
    if rendering.layout == "original":
        return _original_layout(phrase, rng, drawn)
    colours = rng.choice(rendering.colours)
    if colours == ANY_DARK_ON_LIGHT:
        ink, paper = _any_dark_on_light(rng)
    else:
        ink, paper = COLOUR_PAIRS[colours]
        ink, paper = _jittered(ink, rng, COLOUR_JITTER), _jittered(paper, rng, COLOUR_JITTER)
    if rendering.layout == "maker":
        image = maker_image(phrase, rng.randint(*rendering.sizes), rng.randint(0, MAKER_STEPS), ink, paper, drawn)
    else:
        image = _words_layout(phrase, rendering, ink, paper, rng, drawn)
    return add_noise(image, rng.uniform(0, rendering.noise) if rng.random() < 0.5 else 0.0, rng)


def blank_or_noise(rng: random.Random) -> Image.Image:
    """An image that carries no request: blank paper of a random light colour, or pixel noise."""
    if rng.random() < 0.5:
        return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), _jittered((235, 235, 235), rng, 20))
    pixels = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3))
    return Image.fromarray(pixels.astype(np.uint8))
