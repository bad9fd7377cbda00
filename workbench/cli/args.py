"""Argument groups shared by the `workbench` and `workbench.organism` commands: model, rewards, steering.

Choices come from the registries (rules.modes(), steering.STEER_AT) so a new rule appears in every command.
"""

from __future__ import annotations

import argparse

from ..steer.rules import defence_signs, modes
from ..steer.steering import STEER_AT, parse_layers

MODEL_HELP = ("model: 'tiny-random:<arch>' (llava, llava_next, qwen2_vl, qwen2_5_vl, idefics3, smolvlm, "
              "paligemma, gemma3, lfm2_vl), 'organism', a local folder or a Hugging Face repo id")


def layers_arg(text: str | None) -> tuple[int, ...] | None:
    """argparse type for --layers: '3,4,5' -> (3, 4, 5)."""
    try:
        return parse_layers(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers takes comma-separated layer numbers such as 3,4,5, "
                                         f"got {text!r}") from None


def count_arg(minimum: int):
    """An argparse type: an integer of at least `minimum` (argparse turns the error into a one-line message)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def signs_text() -> str:
    return "Signs: " + "; ".join(f"{m}: {s}" for m, s in defence_signs().items()) + "."


def add_model_args(parser: argparse.ArgumentParser, required: bool = True, default: str | None = None) -> None:
    parser.add_argument("--model", required=required, default=default, help=MODEL_HELP)
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, or auto (device_map='auto'); default: CUDA if present")
    parser.add_argument("--dtype", default=None, help="auto, bf16, fp16 or fp32; default: the checkpoint's own")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the checkpoint's own Python code to run (off unless you ask)")


def add_reward_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip", default=None, help="open_clip model: 'organism', a local-dir folder or "
                        "ARCH:PRETRAINED (default: organism for the organism, else ViT-B-32:openai)")
    parser.add_argument("--detoxify-checkpoint", default=None, help="local Detoxify .ckpt (else Detoxify's "
                        "'original' weights when cached, else the named offline fallback alt-profanity-check)")
    parser.add_argument("--detoxify-download", action="store_true",
                        help="fetch Detoxify's 'original' weights when they are not cached (nothing is downloaded "
                        "unless you ask)")
    parser.add_argument("--detoxify-config", default=None, help="folder with the checkpoint's HF config/tokenizer")


def add_steering_args(parser: argparse.ArgumentParser, mode: str | None = None, alpha: float | None = None,
                      steer_at_default: str | None = None) -> None:
    """--mode, --alpha, --layers and (for generation) --steer-at, with --positions kept as an alias. Unset,
    they come from the vector's recorded settings (Stage II records what it trained with), else the defaults
    (adaptive, alpha 1, every layer in the file, all steps); the command prints which applied."""
    recorded = "default: as recorded in the vector, else {}"
    parser.add_argument("--mode", default=mode, choices=modes(),
                        help="steering rule (" + (f"default {mode}" if mode else recorded.format("adaptive")) + ")")
    parser.add_argument("--alpha", type=float, default=alpha, help="strength (" + (
        f"default {alpha:g}" if alpha is not None else recorded.format("1")) + "); " + signs_text())
    parser.add_argument("--layers", type=layers_arg, default=None,
                        help="comma-separated layers (" + recorded.format("all in the vector file") + ")")
    where = (f"default {steer_at_default}" if steer_at_default else recorded.format("all"))
    parser.add_argument("--steer-at", "--positions", dest="steer_at", default=steer_at_default, choices=STEER_AT,
                        help="which positions are steered: all, the prompt (prefill), generated tokens, or the last "
                        "position of every forward call (ASTRA's protocol) (" + where + "; --positions is the old "
                        "name, kept for one release)")
