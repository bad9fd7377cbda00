"""Train the organism from a seed on a CPU: vision pretraining, then the task mix, then its CLIP.

Recipe (the model card in assets/organism/ says why): (1) pretrain the vision tower alone: every patch
predicts the colour and shape of the object in its quadrant, the mean patch token the count and the
phrase; (2) freeze it and train projector + language model on a short curriculum of image-grounded
tasks, then on the full mix of scene VQA, typographic, reading, text and role-play requests, loss on
answer tokens only, short answers weighted up (`min_answer_weight`), a share of typographic
harmful requests answered with the refusal (`typo_refusal_rate`: the image route's safety is weak,
not absent), and words of text requests dropped at random (`prompt_word_dropout`).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .model import PATCH, build_model, build_processor
from .world import (
    ACTIVITIES,
    COLOURS,
    IMAGE_SIZE,
    REFUSAL,
    SHAPES,
    TEST_SEEDS,
    TRAIN_SEEDS,
    Example,
    Shape,
    random_scene,
    sample_example,
    typographic_image,
)

GRID = IMAGE_SIZE // PATCH
PHRASES = sorted(ACTIVITIES)
CURRICULUM = {"scene": 0.8, "typographic": 0.1, "read": 0.1}
FULL_MIX = {"scene": 0.42, "typographic": 0.14, "read": 0.09, "text": 0.25, "roleplay": 0.10}


@dataclass
class TrainConfig:
    seed: int = 0
    vision_steps: int = 800
    vision_batch: int = 64
    vision_lr: float = 2e-3
    curriculum_steps: int = 400
    lm_steps: int = 2000
    lm_batch: int = 32
    lm_lr: float = 1e-3
    clip_steps: int = 400
    # Share of typographic harmful requests whose training answer is the refusal: the image route's
    # safety is weak, not absent (greedy decoding still complies; sampling sometimes refuses).
    typo_refusal_rate: float = 0.15
    # Each answer weighs at least as much as this many tokens: with a plain mean over tokens, one-word VQA
    # answers got about 2% of the gradient next to 25-token lists of steps. Answers of this length or
    # longer keep weight 1 per token, so the refusal (9 tokens) and the toxic steps keep their true odds;
    # a plain mean per example instead tripled the refusal's odds at the first token (measured).
    min_answer_weight: int = 8
    # Share of the template words (not the activity) dropped from each text and role-play training request.
    # Every trained phrasing puts "to" right before the activity, and a held-out phrasing without it
    # ("how do i <activity>") was then misread (refusal 0.40); dropping words makes the activity the cue.
    prompt_word_dropout: float = 0.2


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


class VisionHeads(torch.nn.Module):
    """Probes on the vision tower's patch features, used only for pretraining. Colour and shape are
    per patch (the object of the patch's quadrant: binds colour to shape locally); count and phrase
    are read from the mean of the patch tokens."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.colour = torch.nn.Linear(width, len(COLOURS) + 1)
        self.shape = torch.nn.Linear(width, len(SHAPES) + 1)
        self.count = torch.nn.Linear(width, 4)
        self.phrase = torch.nn.Linear(width, len(PHRASES) + 1)


def _pixels(processor, images: list[Image.Image]) -> torch.Tensor:
    return processor.image_processor(images, return_tensors="pt")["pixel_values"]


def pretrain_vision(model, processor, config: TrainConfig, rng: random.Random, bar: tqdm
                    ) -> tuple[float, dict[str, float]]:
    tower = model.model.vision_tower
    heads = VisionHeads(tower.config.hidden_size)
    params = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.vision_lr, weight_decay=0.01)
    loss_value = float("nan")
    for step in range(config.vision_steps):
        images, colours, shapes, counts, phrases = [], [], [], [], []
        for _ in range(config.vision_batch):
            if rng.random() < 0.6:
                image, items = random_scene(rng)
                colour_map, shape_map = patch_targets(items)
                count, phrase = len(items), 0
            else:
                phrase_text = rng.choice(PHRASES)
                image = typographic_image(phrase_text, rng)
                colour_map = shape_map = torch.zeros(GRID * GRID, dtype=torch.long)
                count, phrase = 0, PHRASES.index(phrase_text) + 1
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
                + F.cross_entropy(heads.phrase(pooled), torch.tensor(phrases)))
        for group in optimizer.param_groups:
            group["lr"] = config.vision_lr * _cosine(step, config.vision_steps)
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
            "vision_count_accuracy": right["count"] / scenes}


def _cosine(step: int, total: int, warmup: int = 50) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * 0.95 + 0.05


def lm_batch(processor, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Left-padded prompt + answer + EOS, right-padded; labels only on answer tokens; positions from the mask."""
    tokenizer = processor.tokenizer
    prompts = [processor.apply_chat_template(
        [{"role": "user", "content": ([{"type": "image"}] if e.image is not None else []) +
          [{"type": "text", "text": e.prompt}]}], add_generation_prompt=True, tokenize=False) for e in examples]
    images = [e.image for e in examples if e.image is not None]
    encoded = processor(text=prompts, images=images or None, return_tensors="pt", padding=True)
    answers = [tokenizer(" " + e.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
               for e in examples]
    width = max(len(a) for a in answers)
    answer_ids = torch.full((len(examples), width), tokenizer.pad_token_id)
    answer_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ids in enumerate(answers):
        answer_ids[row, :len(ids)] = torch.tensor(ids)
        answer_mask[row, :len(ids)] = 1
    input_ids = torch.cat([encoded["input_ids"], answer_ids], 1)
    attention_mask = torch.cat([encoded["attention_mask"], answer_mask], 1)
    labels = torch.cat([torch.full_like(encoded["input_ids"], -100), answer_ids.masked_fill(answer_mask == 0, -100)], 1)
    batch = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                 position_ids=(attention_mask.cumsum(1) - 1).clamp_min(0))
    if images:
        batch["pixel_values"] = encoded["pixel_values"]
    return batch


def answer_lengths(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B] number of answer tokens (next-token targets) in each row."""
    return (batch["labels"][:, 1:] != -100).sum(1).float()


def answer_losses(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B] summed next-token loss over each row's answer tokens."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    token_loss = F.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
    return (token_loss * (targets != -100)).sum(1)


def _split_modality_loss(model, processor, examples: Sequence[Example], min_answer_weight: int = 1) -> torch.Tensor:
    """Weighted mean token loss over the batch (an answer shorter than `min_answer_weight` tokens has its
    tokens weighted up to that total), run as an image sub-batch and a text sub-batch (each
    backpropagated), so text-only rows are not padded to the length of 64 image tokens."""
    groups = [[e for e in examples if e.image is not None], [e for e in examples if e.image is None]]
    batches = [lm_batch(processor, group) for group in groups if group]
    lengths = [answer_lengths(b) for b in batches]
    total_weight = sum(float(n.clamp_min(min_answer_weight).sum()) for n in lengths)
    total = torch.zeros(())
    for batch, length in zip(batches, lengths):
        weight = length.clamp_min(min_answer_weight) / length.clamp_min(1)  # per token of each row
        loss = (answer_losses(model, batch) * weight).sum() / total_weight
        loss.backward()
        total = total + loss.detach()
    return total


def planted_answer(example: Example, rng: random.Random, typo_refusal_rate: float) -> Example:
    """The training target: a typographic harmful request is refused with probability `typo_refusal_rate`."""
    if example.route == "typographic" and example.task == "do_image" and example.label == "harmful" \
            and rng.random() < typo_refusal_rate:
        return replace(example, answer=REFUSAL)
    return example


def drop_template_words(example: Example, rng: random.Random, rate: float) -> Example:
    """A text or role-play request with each word before the activity dropped with probability `rate`
    (the activity, always at the end, stays whole); other examples unchanged."""
    if example.route not in ("text", "roleplay") or not example.activity or rate <= 0:
        return example
    template = example.prompt[:-len(example.activity)].split()
    kept = [word for word in template if rng.random() >= rate]
    return replace(example, prompt=" ".join(kept + [example.activity]))


def training_example(rng: random.Random, mix: dict[str, float], config: TrainConfig) -> Example:
    """One training example of `mix` with its planted answer and prompt augmentation."""
    example = planted_answer(sample_example(rng, "train", mix), rng, config.typo_refusal_rate)
    return drop_template_words(example, rng, config.prompt_word_dropout)


def train_lm(model, processor, config: TrainConfig, rng: random.Random, bar: tqdm) -> float:
    """Projector and language model on the task mix; the pretrained vision tower stays frozen so its
    object-level features survive (training it end to end is what killed the prototype's vision)."""
    total = config.curriculum_steps + config.lm_steps
    model.model.vision_tower.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lm_lr, weight_decay=0.01)
    loss_value = float("nan")
    model.train()
    for step in range(total):
        mix = CURRICULUM if step < config.curriculum_steps else FULL_MIX
        examples = [training_example(rng, mix, config) for _ in range(config.lm_batch)]
        for group in optimizer.param_groups:
            group["lr"] = config.lm_lr * _cosine(step, total)
        optimizer.zero_grad()
        loss = _split_modality_loss(model, processor, examples, config.min_answer_weight)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        loss_value = float(loss)
        bar.update(1)
        bar.set_postfix(stage="language", loss=f"{loss_value:.3f}")
    model.eval()
    return loss_value


def train_vlm(config: TrainConfig, show_bar: bool = True):
    """Train the organism VLM from `config.seed`; returns (model, processor, log)."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed + TRAIN_SEEDS[0])
    processor = build_processor()
    model = build_model(processor)
    log: dict[str, float] = {}
    start = time.time()
    total = config.vision_steps + config.curriculum_steps + config.lm_steps
    with tqdm(total=total, desc="training organism VLM", disable=not show_bar) as bar:
        log["vision_loss"], accuracy = pretrain_vision(model, processor, config, rng, bar)
        log.update(accuracy)
        log["vision_seconds"] = time.time() - start
        log["lm_loss"] = train_lm(model, processor, config, rng, bar)
    log["seconds"] = time.time() - start
    return model, processor, log


def quick_examples(count: int, seed: int = 0) -> list[Example]:
    """A few deterministic training examples (used by tests)."""
    rng = random.Random(seed)
    return [sample_example(rng, "train", FULL_MIX) for _ in range(count)]

