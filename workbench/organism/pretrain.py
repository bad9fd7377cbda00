"""Stage (1) of the organism's training: the vision tower alone, on object-level and word-level targets.

Why pretrain apart: trained end to end from scratch, the vision pathway died (the prototype's image features were
about 255x the text embeddings' norm and got almost no gradient); named targets per patch teach what is where.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .model import PATCH
from .render import HELD_OUT, TRAINING, Drawn, Rendering, blank_or_noise
from .world import ACTIVITIES, COLOURS, IMAGE_SIZE, SHAPES, TEST_SEEDS, Shape, random_scene, typographic_image

GRID = IMAGE_SIZE // PATCH
PHRASES = sorted(ACTIVITIES)
WORDS = sorted({word for phrase in PHRASES for word in phrase.split()})
WORD_MIN_PIXELS = 6  # a patch names a word when the word's box covers at least this many of its 64 pixels


def patch_targets(shapes: Sequence[Shape]) -> tuple[torch.Tensor, torch.Tensor]:
    """[GRID*GRID] colour and shape index of the object in each patch's quadrant (0 = empty quadrant).

    Quadrant-level, not patch-level: an 8x8 patch sees only a piece of an outline (a straight edge
    could be a square, a triangle or a diamond), which capped per-patch shape labels near 60%.
    Labelling all 16 patches of a quadrant with its object makes the tower gather the whole contour
    into every patch token, so colour and shape are bound where the language model reads them."""
    colour_map = torch.zeros((GRID, GRID), dtype=torch.long)
    shape_map = torch.zeros((GRID, GRID), dtype=torch.long)
    half = GRID // 2
    for item in shapes:
        row = half if item.box[1] >= IMAGE_SIZE // 2 else 0
        col = half if item.box[0] >= IMAGE_SIZE // 2 else 0
        colour_map[row:row + half, col:col + half] = list(COLOURS).index(item.colour) + 1
        shape_map[row:row + half, col:col + half] = SHAPES.index(item.shape) + 1
    return colour_map.flatten(), shape_map.flatten()


def word_targets(drawn: Drawn) -> torch.Tensor:
    """[GRID*GRID] index (1-based in WORDS) of the activity word each patch covers; 0 where none does.

    Reading many fonts from one pooled phrase label was slow (a linear phrase probe 0.65 after 1,200
    steps); naming the word under each patch tells the tower where the evidence is (0.77, measured)."""
    target = torch.zeros((GRID, GRID), dtype=torch.long)
    for word, box in drawn:
        if word not in WORDS:
            continue
        left, top, right, bottom = (int(round(v)) for v in box)
        for row in range(max(0, top // PATCH), min(GRID, (bottom - 1) // PATCH + 1)):
            for col in range(max(0, left // PATCH), min(GRID, (right - 1) // PATCH + 1)):
                width = min(right, (col + 1) * PATCH) - max(left, col * PATCH)
                height = min(bottom, (row + 1) * PATCH) - max(top, row * PATCH)
                if width * height >= WORD_MIN_PIXELS:
                    target[row, col] = WORDS.index(word) + 1
    return target.flatten()


class VisionHeads(torch.nn.Module):
    """Probes on the vision tower's patch features, used only for pretraining. Colour and shape are
    per patch (the object of the patch's quadrant: binds colour to shape locally); so is the activity word
    under the patch; count and phrase are read from the mean of the patch tokens."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.colour = torch.nn.Linear(width, len(COLOURS) + 1)
        self.shape = torch.nn.Linear(width, len(SHAPES) + 1)
        self.count = torch.nn.Linear(width, 4)
        self.phrase = torch.nn.Linear(width, len(PHRASES) + 1)
        self.word = torch.nn.Linear(width, len(WORDS) + 1)


def _pixels(processor, images: list[Image.Image]) -> torch.Tensor:
    return processor.image_processor(images, return_tensors="pt")["pixel_values"]


def pretrain_vision(model, processor, steps: int, batch: int, lr: float, rng: random.Random, bar: tqdm
                    ) -> tuple[float, dict[str, float]]:
    tower = model.model.vision_tower
    heads = VisionHeads(tower.config.hidden_size)
    params = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    loss_value = float("nan")
    for step in range(steps):
        images, colours, shapes, counts, phrases, words = [], [], [], [], [], []
        for _ in range(batch):
            draw = rng.random()
            empty = torch.zeros(GRID * GRID, dtype=torch.long)
            word_map = empty
            if draw < 0.35:
                image, items = random_scene(rng)
                colour_map, shape_map = patch_targets(items)
                count, phrase = len(items), 0
            elif draw < 0.4:  # blank paper or noise: no object, no phrase
                image, colour_map, shape_map, count, phrase = blank_or_noise(rng), empty, empty, 0, 0
            else:
                phrase_text = rng.choice(PHRASES)
                drawn: Drawn = []
                image = typographic_image(phrase_text, rng, drawn=drawn)
                colour_map = shape_map = empty
                count, phrase, word_map = 0, PHRASES.index(phrase_text) + 1, word_targets(drawn)
            words.append(word_map)
            images.append(image)
            colours.append(colour_map)
            shapes.append(shape_map)
            counts.append(count)
            phrases.append(phrase)
        features = tower(_pixels(processor, images)).last_hidden_state[:, 1:]  # patch tokens, as LLaVA reads them
        pooled = features.mean(1)
        loss = (F.cross_entropy(heads.colour(features).flatten(0, 1), torch.stack(colours).flatten())
                + 2.0 * F.cross_entropy(heads.shape(features).flatten(0, 1), torch.stack(shapes).flatten())
                + F.cross_entropy(heads.count(pooled), torch.tensor(counts))
                + F.cross_entropy(heads.phrase(pooled), torch.tensor(phrases))
                + F.cross_entropy(heads.word(features).flatten(0, 1), torch.stack(words).flatten()))
        for group in optimizer.param_groups:
            group["lr"] = lr * cosine_rate(step, steps)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_value = float(loss)
        bar.update(1)
        bar.set_postfix(stage="vision", loss=f"{loss_value:.3f}")
    return loss_value, vision_accuracy(tower, heads, processor)


@torch.no_grad()
def vision_accuracy(tower, heads: VisionHeads, processor, scenes: int = 256) -> dict[str, float]:
    """Held-out (test-seed) accuracy of the pretraining heads: colour and shape of each occupied quadrant
    (mean logits of its patches), and count; says whether the features can bind colour to shape at all."""
    rng = random.Random(TEST_SEEDS[0] + 7)
    drawn = [random_scene(rng) for _ in range(scenes)]
    features = tower(_pixels(processor, [image for image, _ in drawn])).last_hidden_state[:, 1:]
    colour_logits, shape_logits = heads.colour(features), heads.shape(features)
    right = {"colour": 0, "shape": 0, "count": 0}
    objects = 0
    for row, (_, items) in enumerate(drawn):
        colour_map, shape_map = patch_targets(items)
        for colour in colour_map[colour_map > 0].unique():  # one object per colour, so per object
            cells = colour_map == colour
            right["colour"] += int(colour_logits[row, cells].mean(0).argmax() == colour)
            truth = shape_map[cells][0]
            right["shape"] += int(shape_logits[row, cells].mean(0).argmax() == truth)
            objects += 1
        right["count"] += int(heads.count(features[row].mean(0)).argmax() == len(items))
    return {"vision_colour_accuracy": right["colour"] / objects, "vision_shape_accuracy": right["shape"] / objects,
            "vision_count_accuracy": right["count"] / scenes,
            "vision_phrase_training": _phrase_probe(tower, heads, processor, TRAINING, rng),
            "vision_phrase_held_out": _phrase_probe(tower, heads, processor, (HELD_OUT,), rng)}


def _phrase_probe(tower, heads: VisionHeads, processor, renderings: Sequence[Rendering], rng: random.Random,
                  count: int = 256) -> float:
    """Share of typographic images whose phrase the pooled phrase head names (can the tower read at all?)."""
    truth = [rng.randrange(len(PHRASES)) for _ in range(count)]
    images = [typographic_image(PHRASES[t], rng, rng.choice(list(renderings))) for t in truth]
    logits = heads.phrase(tower(_pixels(processor, images)).last_hidden_state[:, 1:].mean(1))
    return float((logits.argmax(-1) == torch.tensor(truth) + 1).float().mean())


def cosine_rate(step: int, total: int, warmup: int = 50) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * 0.95 + 0.05
