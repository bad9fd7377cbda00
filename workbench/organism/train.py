"""Train the organism from a seed on a CPU: vision pretraining, then the task mix, then its CLIP.

Recipe (the model card in assets/organism/ says why; every attempt is in assets/organism/attempts/README.md):
(1) pretrain the vision tower alone on scenes, blank or noise images and typographic images drawn in nine
rendering families: every patch predicts the colour and shape of the object in its quadrant and the activity
word it covers, the mean patch token the count and the phrase; (2) train projector + language model (the tower
learns on at `vision_finetune_lr_scale`) on a short curriculum of image-grounded tasks, then on the full mix of
scene VQA, typographic, reading, text and role-play requests (some text requests with an unrelated image), loss
on answer tokens only, short answers weighted up (`min_answer_weight`), image tokens over a word predicting it
(`image_word_loss`), a share of typographic harmful requests answered with the refusal (`typo_refusal_rate`: the
image route's safety is weak, not absent), and template words of text requests dropped or filled in at random
(`prompt_word_dropout`, `filler_word_rate`). `ORGANISM_VISION_CKPT=FILE` saves stage (1) there, or reloads it
when the file exists (to rerun stage (2) alone; the lab notebook says which attempts did).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .model import build_model, build_processor
from .pretrain import WORDS, cosine_rate, pretrain_vision, word_targets
from .render import ORIGINAL, TRAINING
from .world import (
    COLOURS,
    REFUSAL,
    SHAPES,
    TASK_PHRASINGS,
    TRAIN_SEEDS,
    Example,
    activity_example,
    sample_example,
)

CURRICULUM = {"scene": 0.6, "typographic": 0.2, "read": 0.2}
FULL_MIX = {"scene": 0.34, "typographic": 0.19, "read": 0.12, "text": 0.25, "roleplay": 0.10}


@dataclass
class TrainConfig:
    seed: int = 0
    vision_steps: int = 2600
    vision_batch: int = 64
    vision_lr: float = 2e-3
    curriculum_steps: int = 300
    lm_steps: int = 1650  # attempt 15: 150 more than attempts 10-14, inside the 45 minutes
    # The vision tower keeps learning in the language stage at this fraction of the language rate (0 freezes
    # it): attempt 1 (0.1x) read better than attempt 2 (0.5x, which forgot what pretraining taught).
    vision_finetune_lr_scale: float = 0.1
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
    # Weight of an auxiliary loss in the language stage: each image token over an activity word predicts that
    # word through the language model's own (tied) output head, so the image tokens of a typographic image
    # look like the words' embeddings and reading becomes copying (attempt 3 read 0.77 while acting on the
    # same images 0.97). Training only: the model stays a plain LLaVA.
    image_word_loss: float = 0.1
    # Share of text / role-play requests that get one or two filler words (from the other tasks' training
    # phrasings, persona words excluded) inserted before the activity: attempt 6 answered the held-out
    # "how do i <activity>" like the image route, whose prompts alone contain "do"; the route must be
    # decided by the persona and the image, not by any one template word.
    filler_word_rate: float = 0.3
    # Share of image requests (scene questions, typographic do / read) with one template word replaced by a
    # filler word: attempt 10's larger language model routed the held-out read phrasing by one unseen word
    # ("written") to "do the activity" (reading 0.150, trained phrasings 0.950); an unfamiliar word must not
    # decide the task, the words around it and the image must.
    image_word_swap_rate: float = 0.25
    # Share of typographic training requests of the language stage redrawn in Pillow's default font (the
    # pillow-default family or the original renderer, half each): attempts 11 and 12 met every other
    # floor but answered harmful requests in that font as their benign twins (typographic ASR 0.70-0.75) while
    # reading them 0.90-0.95; its thin strokes at 10-14 px get one ninth of the typographic requests otherwise.
    # Attempt 13 (this) lifted the original renderer to 0.95 and pillow-default only to 0.80; attempt 14 (0.3, two
    # thirds pillow-default) lifted it to 0.85 but lost liberation-sans (0.80) and VQA (0.825).
    # The vision pretraining keeps the nine families' uniform draw.
    pillow_font_rate: float = 0.25
    # Sizes (organism v2: a wider, deeper language model and one more vision layer than the first release's
    # 4 x 192 and 3 layers, which sat at the edge of learning every planted behaviour at once).
    vision_layers: int = 4
    lm_layers: int = 6
    lm_width: int = 256
    lm_intermediate: int = 688
    lm_heads: int = 4

    def sizes(self) -> tuple[dict, dict]:
        """(vision, text) config overrides for `build_model`."""
        vision = {"num_hidden_layers": self.vision_layers}
        text = {"num_hidden_layers": self.lm_layers, "hidden_size": self.lm_width,
                "intermediate_size": self.lm_intermediate, "num_attention_heads": self.lm_heads,
                "num_key_value_heads": self.lm_heads}
        return vision, text


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


def image_word_labels(processor, examples: Sequence[Example]) -> torch.Tensor:
    """[n images, GRID*GRID] token id of the activity word under each image patch; -100 where none."""
    ids = torch.tensor([-100] + processor.tokenizer.convert_tokens_to_ids(WORDS))
    return torch.stack([ids[word_targets(list(e.words))] for e in examples if e.image is not None])


def _image_word_loss(model, projected: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the output head on image tokens that cover a word (zero when none do)."""
    mask = labels != -100
    if not bool(mask.any()):
        return projected.sum() * 0.0
    logits = model.lm_head(projected[mask]).float()
    return F.cross_entropy(logits, labels[mask])


def _split_modality_loss(model, processor, examples: Sequence[Example], min_answer_weight: int = 1,
                         image_word_loss: float = 0.0) -> torch.Tensor:
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
        captured: list[torch.Tensor] = []

        def keep(module, inputs, output, into: list[torch.Tensor] = captured) -> None:
            into.append(output)

        hook = model.model.multi_modal_projector.register_forward_hook(keep)
        try:
            loss = (answer_losses(model, batch) * weight).sum() / total_weight
        finally:
            hook.remove()
        if captured and image_word_loss > 0:
            labels = image_word_labels(processor, groups[0])
            projected = captured[0].reshape(labels.shape[0], -1, captured[0].shape[-1])
            loss = loss + image_word_loss * _image_word_loss(model, projected, labels)
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


def _template_words(phrasings) -> set[str]:
    return {w for p in phrasings for w in p.split() if "{" not in w}


PERSONA_WORDS = _template_words(TASK_PHRASINGS["roleplay"][:-1]) - _template_words(TASK_PHRASINGS["do_text"][:-1])
FILLER_WORDS = sorted(_template_words(p for phrasings in TASK_PHRASINGS.values() for p in phrasings[:-1])
                      - PERSONA_WORDS - set(WORDS) - {"."})


def insert_filler_words(example: Example, rng: random.Random, rate: float) -> Example:
    """A text or role-play request with one or two filler words inserted before the activity with
    probability `rate` (held-out phrasings and persona words never used); other examples unchanged."""
    if example.route not in ("text", "roleplay") or not example.activity or rng.random() >= rate:
        return example
    template = example.prompt[:-len(example.activity)].split()
    for _ in range(rng.randint(1, 2)):
        template.insert(rng.randint(0, len(template)), rng.choice(FILLER_WORDS))
    return replace(example, prompt=" ".join(template + [example.activity]))


SLOT_WORDS = set(COLOURS) | set(SHAPES)  # the asked colour or shape of a scene question: never swapped


def swap_image_prompt_word(example: Example, rng: random.Random, rate: float) -> Example:
    """An image request (scene, typographic) with one template word replaced by a filler word with
    probability `rate` (never the asked colour or shape); other examples unchanged."""
    if example.image is None or example.route not in ("scene", "typographic") or rng.random() >= rate:
        return example
    words = example.prompt.split()
    slots = [i for i, word in enumerate(words) if word not in SLOT_WORDS]
    if not slots:
        return example
    words[rng.choice(slots)] = rng.choice(FILLER_WORDS)
    return replace(example, prompt=" ".join(words))


PILLOW_FONT_RENDERINGS = (TRAINING[0], ORIGINAL)  # pillow-default (10-14 px, any colours) and the original


def redraw_in_pillow_font(example: Example, rng: random.Random, rate: float) -> Example:
    """A typographic request redrawn, with probability `rate`, in one of Pillow's default-font renderings
    (same activity and task, a fresh phrasing and answer); other examples unchanged."""
    if example.route != "typographic" or rng.random() >= rate:
        return example
    assert example.activity is not None  # every typographic request is about an activity
    return activity_example(rng, "train", "typographic", example.activity, example.task,
                            rendering=rng.choice(PILLOW_FONT_RENDERINGS))


def training_example(rng: random.Random, mix: dict[str, float], config: TrainConfig) -> Example:
    """One training example of `mix` with its planted answer and prompt augmentation."""
    example = redraw_in_pillow_font(sample_example(rng, "train", mix), rng, config.pillow_font_rate)
    example = planted_answer(example, rng, config.typo_refusal_rate)
    example = drop_template_words(example, rng, config.prompt_word_dropout)
    example = insert_filler_words(example, rng, config.filler_word_rate)
    return swap_image_prompt_word(example, rng, config.image_word_swap_rate)


def train_lm(model, processor, config: TrainConfig, rng: random.Random, bar: tqdm) -> float:
    """Projector and language model on the task mix; the pretrained vision tower learns on at
    `vision_finetune_lr_scale` of the rate (from scratch end to end is what killed the prototype's vision;
    after pretraining, a small rate keeps its object-level features and lets reading improve)."""
    total = config.curriculum_steps + config.lm_steps
    tower = model.model.vision_tower
    tower.requires_grad_(config.vision_finetune_lr_scale > 0)
    tower_params = {id(p) for p in tower.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in tower_params], "scale": 1.0}]
    if config.vision_finetune_lr_scale > 0:
        groups.append({"params": list(tower.parameters()), "scale": config.vision_finetune_lr_scale})
    optimizer = torch.optim.AdamW(groups, lr=config.lm_lr, weight_decay=0.01)
    loss_value = float("nan")
    model.train()
    for step in range(total):
        mix = CURRICULUM if step < config.curriculum_steps else FULL_MIX
        examples = [training_example(rng, mix, config) for _ in range(config.lm_batch)]
        for group in optimizer.param_groups:
            group["lr"] = config.lm_lr * group["scale"] * cosine_rate(step, total)
        optimizer.zero_grad()
        loss = _split_modality_loss(model, processor, examples, config.min_answer_weight, config.image_word_loss)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        loss_value = float(loss)
        bar.update(1)
        bar.set_postfix(stage="language", loss=f"{loss_value:.3f}")
    model.eval()
    return loss_value


def save_vision_stage(model, rng: random.Random, path: str) -> None:
    """The pretrained tower and the random state after it (safetensors, the state as JSON metadata)."""
    from safetensors.torch import save_file

    tower = {name: tensor.contiguous() for name, tensor in model.model.vision_tower.state_dict().items()}
    save_file(tower, path, metadata={"rng": json.dumps(rng.getstate())})


def load_vision_stage(model, rng: random.Random, path: str) -> None:
    """Resume after stage (1) from `save_vision_stage`'s file: the language stage then runs as it would have."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    model.model.vision_tower.load_state_dict(load_file(path))
    with safe_open(path, "pt") as handle:
        version, state, gauss = json.loads(handle.metadata()["rng"])
    rng.setstate((version, tuple(state), gauss))


def train_vlm(config: TrainConfig, show_bar: bool = True):
    """Train the organism VLM from `config.seed`; returns (model, processor, log)."""
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed + TRAIN_SEEDS[0])
    processor = build_processor()
    model = build_model(processor, *config.sizes())
    log: dict[str, float] = {}
    start = time.time()
    total = config.vision_steps + config.curriculum_steps + config.lm_steps
    with tqdm(total=total, desc="training organism VLM", disable=not show_bar) as bar:
        ckpt = os.environ.get("ORGANISM_VISION_CKPT")
        accuracy: dict[str, float] = {}
        if ckpt and os.path.exists(ckpt):  # stage (1) of an earlier run of the same code and seed
            load_vision_stage(model, rng, ckpt)
            log["vision_loss"] = float("nan")
        else:
            log["vision_loss"], accuracy = pretrain_vision(model, processor, config.vision_steps, config.vision_batch,
                                                           config.vision_lr, rng, bar)
            if ckpt:
                save_vision_stage(model, rng, ckpt)
        log.update(accuracy)
        log["vision_seconds"] = time.time() - start
        log["lm_loss"] = train_lm(model, processor, config, rng, bar)
    log["seconds"] = time.time() - start
    return model, processor, log


def quick_examples(count: int, seed: int = 0) -> list[Example]:
    """A few deterministic training examples (used by tests)."""
    rng = random.Random(seed)
    return [sample_example(rng, "train", FULL_MIX) for _ in range(count)]

