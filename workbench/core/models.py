"""Load a vision-language model once and know everything the rest of the workbench needs about it.

`load_vlm(spec)` returns a `VLM`: the Hugging Face model, its processor, the nnsight wrapper, the
decoder layers (as nnsight envoys, found generically through `get_decoder().layers`), the hidden
size, a lock (nnsight traces are not thread-safe) and `encode()`, which turns (image, prompt)
pairs into one left-padded batch in the model's own chat format.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .fairlock import FairLock
from .tiny import TINY_ARCHS, build_tiny
from .tracing import NNsight

Item = tuple["Image.Image | None", str]  # (image or None, prompt)

# Processors that want images nested per sample ([[img], [img]]) rather than a flat list. Others that say so
# ("... images per sample") get the nested form too: with one image per prompt both mean the same thing.
_NESTED_IMAGE_TYPES = {"idefics2", "idefics3", "smolvlm", "gemma3", "mllama", "lfm2_vl"}
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}
ORGANISM_DIR = Path(__file__).resolve().parents[2] / "assets" / "organism" / "vlm"


@dataclass
class VLM:
    """A loaded VLM with its processor, nnsight wrapper, decoder layers and lock."""

    spec: str
    hf_model: Any  # a transformers PreTrainedModel; its dynamic attributes (config, generate) defeat static types
    processor: Any
    nn: NNsight
    layer_path: str
    layers: list[Any]  # nnsight envoys of the decoder layers, in order
    hidden_size: int
    lock: FairLock = field(default_factory=FairLock, repr=False)  # every trace; FIFO, re-entrant

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def model_type(self) -> str:
        return str(self.hf_model.config.model_type)

    @property
    def input_device(self) -> torch.device:
        """Where inputs go: the device of the input embeddings (first shard under device_map)."""
        return self.hf_model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf_model.get_input_embeddings().weight.dtype

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def image_token_id(self) -> int | None:
        config = self.hf_model.config
        for name in ("image_token_id", "image_token_index"):
            value = getattr(config, name, None)
            if value is not None:
                return int(value)
        return None

    def layer_module(self, index: int) -> torch.nn.Module:
        """The plain torch module of decoder layer `index` (for device/dtype lookups)."""
        return self.hf_model.get_decoder().layers[index]

    def format_prompt(self, prompt: str, has_image: bool, system: str | None = None) -> str:
        """The prompt in the model's chat format, with an image placeholder where the template puts one, after
        `system` as a system message (refused when the template has no place for one: it would vanish)."""
        template = getattr(self.processor, "chat_template", None)
        if not template:  # e.g. PaliGemma: one image token up front, the processor expands it and adds BOS
            if system:
                raise ValueError(f"{self.spec} has no chat template, so it has no system prompt to set")
            image_token = getattr(self.processor, "image_token", None)
            return f"{image_token}{prompt}" if has_image and image_token else prompt
        content: list[dict[str, str]] = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": prompt})
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if system:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if system and system not in text:
            raise ValueError(f"{self.spec}'s chat template drops system messages; the system-prompt baseline cannot "
                             "run on it")
        return text

    def encode(self, items: Sequence[Item], system: str | None = None) -> dict[str, torch.Tensor]:
        """One left-padded batch for (image, prompt) pairs (after a system prompt when given); all items must
        have an image, or none."""
        if not items:
            raise ValueError("encode() needs at least one (image, prompt) pair")
        with_image = [image is not None for image, _ in items]
        if any(with_image) and not all(with_image):
            raise ValueError("a batch must be all image prompts or all text-only prompts; use batches_by_modality()")
        texts = [self.format_prompt(prompt, has_image, system) for (_, prompt), has_image in zip(items, with_image)]
        kwargs: dict[str, Any] = dict(text=texts, return_tensors="pt", padding=True)
        with self.lock:  # the tokenizer's padding state is shared by threads: see token_ids
            if all(with_image):
                images = [image.convert("RGB") for image, _ in items if image is not None]
                nested = self.model_type in _NESTED_IMAGE_TYPES
                kwargs["images"] = [[im] for im in images] if nested else images
                try:
                    encoding = self.processor(**kwargs)
                except ValueError as error:
                    if nested or "per sample" not in str(error):
                        raise
                    kwargs["images"] = [[im] for im in images]
                    encoding = self.processor(**kwargs)
            else:
                try:
                    encoding = self.processor(**kwargs)
                except ValueError:  # processors that insist on images (PaliGemma): tokenize the text alone
                    encoding = self.tokenizer(texts, return_tensors="pt", padding=True)
        encoding = {k: v for k, v in encoding.items() if k != "labels"}  # PaliGemma adds labels
        device, dtype = self.input_device, self.dtype
        return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
                for k, v in encoding.items()}

    def token_ids(self, text: str) -> list[int]:
        """`text`'s token ids without special tokens. Under the model's lock, as `encode`: a fast tokenizer keeps its
        padding and truncation settings as state, so a call in one thread can reset them under another's batch
        ("Unable to create tensor ... excessive nesting")."""
        with self.lock:
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, token_ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Decode generated token ids (without the prompt; rows may differ in length), skipping special tokens."""
        return [text.strip() for text in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]


def batches_by_modality(items: Sequence[Item] | Sequence[bool], batch_size: int) -> list[list[int]]:
    """Index batches of at most `batch_size`, each all-image or all-text, preserving order within a modality.
    `items` are (image, prompt) pairs, or just whether each input has an image."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    groups: dict[bool, list[int]] = {True: [], False: []}
    for index, item in enumerate(items):
        groups[item if isinstance(item, bool) else item[0] is not None].append(index)  # type: ignore[index]
    return [group[i:i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else None
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def _envoy_at(root: NNsight, path: str) -> Any:
    """Walk a dotted module path (as in named_modules) through nnsight envoys."""
    envoy: Any = root
    for part in path.split(".") if path else []:
        envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
    return envoy


def find_decoder_layers(model: Any) -> tuple[str, torch.nn.ModuleList]:
    """The decoder layers' ModuleList and its dotted path, found via `get_decoder().layers`."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):  # fall back to the longest ModuleList named *layers
        candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList)
                      and n.split(".")[-1] in {"layers", "h", "blocks"} and "vision" not in n and "visual" not in n]
        if not candidates:
            raise ValueError(f"cannot find decoder layers in {type(model).__name__}")
        return max(candidates, key=lambda nm: len(nm[1]))
    path = {id(m): n for n, m in model.named_modules()}[id(layers)]
    return path, layers


def wrap(spec: str, model: Any, processor: Any) -> VLM:
    """Wrap an already-built model and processor as a `VLM`; its weights are frozen (the workbench
    trains steering parameters only)."""
    model.eval().requires_grad_(False)
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    path, layer_list = find_decoder_layers(model)
    wrapped = NNsight(model)
    layers = [_envoy_at(wrapped, f"{path}.{i}") for i in range(len(layer_list))]
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return VLM(spec=spec, hf_model=model, processor=processor, nn=wrapped, layer_path=path, layers=layers,
               hidden_size=int(text_config.hidden_size))


def load_vlm(spec: str, device: str | None = None, dtype: str | torch.dtype | None = None,
             trust_remote_code: bool = False) -> VLM:
    """Load a VLM: `tiny-random:<arch>`, `organism`, a local folder or a Hugging Face repo id.

    device: "cpu", "cuda", "auto" (accelerate's device_map="auto" across devices) or None
    (CUDA when available). dtype: "auto", "bf16", "fp16", "fp32" or None (the checkpoint's own).
    """
    torch_dtype = parse_dtype(dtype)
    model: Any
    if spec.startswith("tiny-random:"):
        model, processor = build_tiny(spec.split(":", 1)[1])
        if torch_dtype is not None:
            model = model.to(torch_dtype)
        return wrap(spec, model.to(_resolve_device(device)), processor)
    path = str(ORGANISM_DIR) if spec == "organism" else spec
    if spec == "organism" and not ORGANISM_DIR.exists():
        raise FileNotFoundError(f"the organism model is not in {ORGANISM_DIR}; train it with "
                                "`python -m workbench.organism train` or load another model")
    if not os.path.isdir(path) and os.environ.get("HF_HUB_OFFLINE") == "1" and "/" not in path:
        raise FileNotFoundError(f"{spec!r} is neither a local folder, 'organism' nor tiny-random:<arch> "
                                f"({', '.join(TINY_ARCHS)}), and the hub is offline")
    if not os.path.isdir(path):
        _check_hub_reachable(spec)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs: dict[str, Any] = dict(trust_remote_code=trust_remote_code)
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    if device == "auto":
        kwargs["device_map"] = "auto"
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    if device != "auto":
        model = model.to(_resolve_device(device))
    return wrap(spec, model, processor)


HUB_PROBE_SECONDS = 10.0


def _check_hub_reachable(repo_id: str) -> None:
    """Fail in seconds, not minutes, when a hub id is neither cached nor reachable: without this the hub client
    retries each file it looks for (2.5 minutes measured offline) before saying so."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return  # the hub client itself then looks in the cache only, and fails at once
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return  # cached: let the hub client decide whether to refresh it
    import socket
    from urllib.parse import urlparse

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=HUB_PROBE_SECONDS).close()
    except OSError as error:
        raise FileNotFoundError(f"{repo_id!r} is not a local folder and the Hugging Face hub ({host}) cannot be "
                                f"reached ({error.__class__.__name__}); give a local folder, organism or "
                                "tiny-random:<arch>, or connect to the hub") from None


def _resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
