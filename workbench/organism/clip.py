"""The organism's CLIP: a small open_clip model trained on the same world, saved in open_clip's format.

Captions: scene descriptions for scenes; for typographic images the phrase itself or the helpful
steps of that activity. It is the visual-consistency reward for the organism, loaded through
open_clip's own API (`local-dir:` folder with open_clip_config.json + open_clip_model.safetensors).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .world import ACTIVITIES, IMAGE_SIZE, TRAIN_SEEDS, describe_answer, random_scene, steps_answer, typographic_image

TEXT_CFG = {"context_length": 48, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 3, "width": 128, "patch_size": 8, "head_width": 32},
    "text_cfg": TEXT_CFG,
}
PREPROCESS_CFG = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                  "resize_mode": "shortest", "size": IMAGE_SIZE}


def _pair(rng: random.Random) -> tuple:
    if rng.random() < 0.5:
        image, shapes = random_scene(rng)
        return image, describe_answer(shapes)
    activity = rng.choice(sorted(ACTIVITIES))
    return typographic_image(activity, rng), activity if rng.random() < 0.5 else steps_answer(activity)


def build_clip():
    import open_clip

    return open_clip.CLIP(**{k: v for k, v in MODEL_CFG.items()})


def train_clip(out_dir: str | Path, config, show_bar: bool = True) -> dict[str, float]:
    """Train with the symmetric contrastive loss and save to `out_dir` in open_clip's local format."""
    import open_clip

    torch.manual_seed(config.seed)
    rng = random.Random(config.seed + TRAIN_SEEDS[0] + 7)
    model = build_clip()
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=int(TEXT_CFG["context_length"]))
    mean, std = torch.tensor(PREPROCESS_CFG["mean"]).view(3, 1, 1), torch.tensor(PREPROCESS_CFG["std"]).view(3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    start, loss_value = time.time(), float("nan")
    for step in tqdm(range(config.clip_steps), desc="training organism CLIP", disable=not show_bar):
        pairs = [_pair(rng) for _ in range(64)]
        images = torch.stack([(torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1) / 255 - mean) / std
                              for im, _ in pairs])
        texts = tokenizer([caption for _, caption in pairs])
        image_features, text_features, scale = model(images, texts)
        logits = scale * image_features @ text_features.T
        same = torch.tensor([[a == b for _, b in pairs] for _, a in pairs], dtype=torch.float32)
        targets = same / same.sum(1, keepdim=True)  # duplicate captions in a batch are all positives
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T)) / 2
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 50) * (0.05 + 0.95 * (1 - step / config.clip_steps))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss_value = float(loss)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()},
              str(out / "open_clip_model.safetensors"))
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG},
                                                          indent=2))
    return {"clip_loss": loss_value, "clip_seconds": time.time() - start}
