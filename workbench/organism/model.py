"""The organism VLM: a real `LlavaForConditionalGeneration` (CLIP vision + Llama text) and its processor.

About 2.6M parameters: 64x64 images in 8x8 patches (64 image tokens), a word-level tokenizer over
the world's vocabulary, and the LLaVA-1.5 chat format with the question before the image: the causal
language model then reads every patch token knowing what is asked, so each patch can mark itself as
the asked object (one hop), which is what binds colour to shape (the A/B is in the model card).
"""

from __future__ import annotations

from pathlib import Path

from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

from ..core.tiny import chat_template, make_tokenizer
from .world import IMAGE_SIZE, vocabulary

PATCH = 8
VISION = dict(model_type="clip_vision_model", hidden_size=128, intermediate_size=512, num_hidden_layers=3,
              num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=128)
TEXT = dict(model_type="llama", hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0,
            bos_token_id=2, eos_token_id=3, rms_norm_eps=1e-5)


def build_processor() -> LlavaProcessor:
    tokenizer = make_tokenizer(["<image>"], extra_words=tuple(vocabulary()))
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True, image_mean=[0.5] * 3, image_std=[0.5] * 3, resample=3,
    )
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=chat_template("USER: ", " <image>", " ASSISTANT:", "", image_last=True))


def build_model(processor: LlavaProcessor, vision: dict | None = None, text: dict | None = None
                ) -> LlavaForConditionalGeneration:
    """A fresh organism; `vision` / `text` override sizes of VISION / TEXT (the saved config.json records them)."""
    tokenizer = processor.tokenizer
    # image_token_id is LlavaConfig's own attribute, set through its keyword arguments (not in its signature)
    config = LlavaConfig(  # type: ignore[call-arg]
        vision_config={**VISION, **(vision or {})}, text_config={**TEXT, **(text or {}), "vocab_size": len(tokenizer)},
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default", projector_hidden_act="gelu", tie_word_embeddings=True,
    )
    return LlavaForConditionalGeneration(config)


def save(model: LlavaForConditionalGeneration, processor: LlavaProcessor, folder: str | Path) -> None:
    """Save in the standard Hugging Face layout (safetensors), loadable with from_pretrained."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
