"""Tiny, deterministic, randomly initialised VLMs of real transformers classes, built offline.

`build_tiny(arch)` returns (model, processor) for one of `TINY_ARCHS`. Processors are assembled
locally (a word-level tokenizer, the architecture's own image processor class with explicit
arguments), so tests and development never touch a model hub. Weights are random but seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

TINY_ARCHS = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "paligemma", "gemma3",
              "lfm2_vl")

# A small English vocabulary so prompts tokenize into real ids (unknown words become <unk>).
_WORDS = tuple((
    "a an the is are was be to of and or in on at for with by from it this that what which who how why "
    "tell me you your my i we they he she do does did can could should would will not no yes please "
    "make build write explain describe show give steps step first then next finally image picture photo "
    "activity instructions safe harmful help sorry cannot assist request bomb weapon steal car wash cook "
    "bake cake bread plant tree garden hack computer poison water paint house red green blue yellow "
    "purple orange black white circle square triangle star shape colour color count many how much one "
    "two three four five here there about question answer user assistant system model text read say "
    "hello world good bad kill hurt people dog cat run walk drive learn teach"
).split())
_PUNCT = list(".,:;!?'\"-()[]/\n") + ["<", ">", "|", "_"]
_UNK, _PAD, _BOS, _EOS = "<unk>", "<pad>", "<s>", "</s>"


def make_tokenizer(special_tokens: list[str], extra_words: tuple[str, ...] = (), **named: str
                   ) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer with `special_tokens` kept whole; `named` tokens (e.g. boi_token=...)
    become attributes with matching `<name>_id`s that survive save_pretrained, as in real checkpoints."""
    vocab_list = [_PAD, _UNK, _BOS, _EOS] + list(dict.fromkeys(_WORDS + tuple(extra_words) + tuple(_PUNCT)))
    vocab_list += [t for t in special_tokens if t not in vocab_list]
    vocab = {word: i for i, word in enumerate(vocab_list)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=_UNK))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=_UNK, pad_token=_PAD, bos_token=_BOS, eos_token=_EOS,
        padding_side="left", extra_special_tokens=dict(named),
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    return tokenizer


def chat_template(user_prefix: str, image_text: str, assistant_prefix: str, end_of_turn: str = "",
                  image_last: bool = False) -> str:
    """A Jinja chat template in the message format real VLM processors use (content parts).
    `image_last` renders each message's text before its images, whatever the order of the parts."""
    image = "{% if part['type'] == 'image' %}" + image_text + "{% endif %}"
    text = "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    each = "{% for part in message['content'] %}"
    parts = (each + text + "{% endfor %}" + each + image + "{% endfor %}") if image_last else (
        each + image + text + "{% endfor %}")
    return (
        "{% for message in messages %}"
        "{% if message['role'] == 'user' %}" + user_prefix + "{% else %}" + assistant_prefix + "{% endif %}"
        + parts + end_of_turn + "{% endfor %}"
        "{% if add_generation_prompt %}" + assistant_prefix + "{% endif %}"
    )


def _llama_text(vocab_size: int, **overrides: Any) -> dict:
    config = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0,
        bos_token_id=2, eos_token_id=3, tie_word_embeddings=False,
    )
    config.update(overrides)
    return config


def _clip_vision(**overrides: Any) -> dict:
    config = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8, projection_dim=32,
    )
    config.update(overrides)
    return config


def _build_llava() -> tuple[torch.nn.Module, Any]:
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer = make_tokenizer(["<image>"])
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", **_clip_vision()),
        text_config=dict(model_type="llama", **_llama_text(len(tokenizer))),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=chat_template("USER: ", "<image>\n", " ASSISTANT:", ""),
    )
    return LlavaForConditionalGeneration(config), processor


def _build_llava_next() -> tuple[torch.nn.Module, Any]:
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tokenizer = make_tokenizer(["<image>"])
    config = LlavaNextConfig(
        vision_config=dict(model_type="clip_vision_model", **_clip_vision()),
        text_config=dict(model_type="llama", **_llama_text(len(tokenizer))),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default", image_grid_pinpoints=[[32, 32], [32, 64], [64, 32]],
    )
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=[[32, 32], [32, 64], [64, 32]], image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=chat_template("[INST] ", "<image>\n", " [/INST]", ""),
    )
    return LlavaNextForConditionalGeneration(config), processor


def _build_qwen(version: str) -> tuple[torch.nn.Module, Any]:
    """Qwen2-VL and Qwen2.5-VL share a processor layout; their vision configs differ."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    specials = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>"]
    tokenizer = make_tokenizer(specials)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    pixels = {"shortest_edge": 56 * 56, "longest_edge": 56 * 56}
    image_processor = Qwen2VLImageProcessor(size=pixels, patch_size=14, merge_size=2, temporal_patch_size=2,
                                            image_mean=[0.5] * 3, image_std=[0.5] * 3)
    video_processor = Qwen2VLVideoProcessor(size=pixels, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=chat_template("<|im_start|>user\n", "<|vision_start|><|image_pad|><|vision_end|>",
                                     "<|im_start|>assistant\n", "<|im_end|>\n"),
    )
    text = _llama_text(len(tokenizer), rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                        "mrope_section": [2, 1, 1]})
    text["model_type"] = "qwen2_vl_text" if version == "qwen2_vl" else "qwen2_5_vl_text"
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if version == "qwen2_vl":
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

        vision = dict(depth=2, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        config = Qwen2VLConfig(text_config=text, vision_config=vision, **tokens)
        return Qwen2VLForConditionalGeneration(config), processor
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision = dict(depth=2, hidden_size=32, out_hidden_size=32, intermediate_size=64, num_heads=4, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    config25 = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
    return Qwen2_5_VLForConditionalGeneration(config25), processor


_IDEFICS_SPECIALS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)
]


def _build_idefics(version: str) -> tuple[torch.nn.Module, Any]:
    """Idefics3 and SmolVLM: SigLIP-like vision + pixel shuffle + Llama text; images nested per sample."""
    tokenizer = make_tokenizer(_IDEFICS_SPECIALS + ["<video>"], end_of_utterance_token="<end_of_utterance>")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    text = dict(model_type="llama", **_llama_text(len(tokenizer)))
    image_kwargs = dict(do_image_splitting=False, size={"longest_edge": 32}, max_image_size={"longest_edge": 32},
                        image_mean=[0.5] * 3, image_std=[0.5] * 3)
    template = chat_template("User:", "<image>", "\nAssistant:", "<end_of_utterance>\n")
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    if version == "idefics3":
        from transformers import (
            Idefics3Config,
            Idefics3ForConditionalGeneration,
            Idefics3ImageProcessor,
            Idefics3Processor,
        )

        config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=2, image_token_id=image_token_id)
        processor = Idefics3Processor(image_processor=Idefics3ImageProcessor(**image_kwargs), tokenizer=tokenizer,
                                      image_seq_len=4, chat_template=template)
        return Idefics3ForConditionalGeneration(config), processor
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    config = SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=2, image_token_id=image_token_id)
    processor = SmolVLMProcessor(image_processor=SmolVLMImageProcessor(**image_kwargs), tokenizer=tokenizer,
                                 video_processor=SmolVLMVideoProcessor(), image_seq_len=4, chat_template=template)
    return SmolVLMForConditionalGeneration(config), processor


def _build_paligemma() -> tuple[torch.nn.Module, Any]:
    """PaliGemma has no chat template: the processor prepends image tokens and BOS to the raw prompt."""
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessor,
    )

    tokenizer = make_tokenizer(["<image>"], image_token="<image>")
    image_processor = SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image_processor.image_seq_length = 16
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # adds 1,152 loc/seg tokens
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8, projection_dim=32)
    text = dict(model_type="gemma", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                pad_token_id=0, bos_token_id=2, eos_token_id=3)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id,
                             projection_dim=32, hidden_size=32)
    return PaliGemmaForConditionalGeneration(config), processor


def _build_gemma3() -> tuple[torch.nn.Module, Any]:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessor, Gemma3Processor

    specials = ["<start_of_image>", "<end_of_image>", "<image_soft_token>", "<start_of_turn>", "<end_of_turn>"]
    tokenizer = make_tokenizer(specials, boi_token="<start_of_image>", eoi_token="<end_of_image>",
                               image_token="<image_soft_token>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in specials}
    image_processor = Gemma3ImageProcessor(size={"height": 32, "width": 32}, do_pan_and_scan=False,
                                           image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4,
        chat_template=chat_template("<start_of_turn>user\n", "<start_of_image>", "<start_of_turn>model\n",
                                     "<end_of_turn>\n"),
    )
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8)
    text = dict(model_type="gemma3_text", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                query_pre_attn_scalar=8, sliding_window=64, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    config = Gemma3Config(vision_config=vision, text_config=text, mm_tokens_per_image=4,
                          boi_token_index=ids["<start_of_image>"], eoi_token_index=ids["<end_of_image>"],
                          image_token_index=ids["<image_soft_token>"])
    return Gemma3ForConditionalGeneration(config), processor


def _build_lfm2_vl() -> tuple[torch.nn.Module, Any]:
    """LFM2-VL: a hybrid conv/attention language model whose processor wants images nested per sample."""
    from transformers import Lfm2VlConfig, Lfm2VlForConditionalGeneration, Lfm2VlProcessor
    from transformers.models.lfm2_vl.image_processing_lfm2_vl import Lfm2VlImageProcessor

    specials = ["<image>", "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>"]
    tokenizer = make_tokenizer(specials, image_token="<image>")
    image_processor = Lfm2VlImageProcessor(do_image_splitting=False, use_thumbnail=False, min_image_tokens=4,
                                           max_image_tokens=16, encoder_patch_size=8, tile_size=32,
                                           downsample_factor=2)
    processor = Lfm2VlProcessor(image_processor, tokenizer,
                                chat_template=chat_template("USER: ", "<image>", " ASSISTANT:"))
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                layer_types=["full_attention", "conv", "full_attention"])
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=8,
                  num_patches=256)
    config = Lfm2VlConfig(text_config=text, vision_config=vision, image_token_id=tokenizer.image_token_id,
                          projector_hidden_size=32, downsample_factor=2, tie_word_embeddings=False)
    return Lfm2VlForConditionalGeneration(config), processor


_BUILDERS: dict[str, Callable[[], tuple[torch.nn.Module, Any]]] = {
    "llava": _build_llava,
    "llava_next": _build_llava_next,
    "qwen2_vl": lambda: _build_qwen("qwen2_vl"),
    "qwen2_5_vl": lambda: _build_qwen("qwen2_5_vl"),
    "idefics3": lambda: _build_idefics("idefics3"),
    "smolvlm": lambda: _build_idefics("smolvlm"),
    "paligemma": _build_paligemma,
    "gemma3": _build_gemma3,
    "lfm2_vl": _build_lfm2_vl,
}


def build_tiny(arch: str, seed: int = 0) -> tuple[torch.nn.Module, Any]:
    """Build a seeded random tiny model of `arch` and its local processor (eval mode, float32)."""
    if arch not in _BUILDERS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of: {', '.join(TINY_ARCHS)}")
    torch.manual_seed(seed)
    model, processor = _BUILDERS[arch]()
    processor.tokenizer.padding_side = "left"
    return model.eval(), processor
