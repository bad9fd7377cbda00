"""Stage I presets: the project's own Stage I (`workbench`) and ASTRA's protocol (`astra`), by name.

| | workbench | astra (ASTRAL-Group/ASTRA at 54df103) |
| --- | --- | --- |
| image sources' direction | mean difference at the captured position | h(image) - h(attributed patches black) |
| text sources' direction | mean difference | mean difference (ASTRA has no text source) |
| benign mean h̄ | benign mean at the captured position | mean over benign records' own answer tokens |
| layers | Stage I's suggested layers (up to 3) | one: the best held-out layer (the last layer left out) |
| steered positions | all | the last position of every forward call |
| α | 1 unless given | chosen by a sweep on the training data (`evaluate/alpha.py`) |

ASTRA's `--steer_layer k` hooks decoder block k-1, whose output is the workbench's layer k-1 (layer i here is the
output of block i): its LLaVA-1.5-13B layer 20 is the workbench's layer 19, its Qwen2-VL layer 14 is layer 13.
"""

from __future__ import annotations

from dataclasses import dataclass

ASTRA_ALPHAS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # ASTRA's scripts use 40-80 on LLaVA-13B


@dataclass(frozen=True)
class Stage1Preset:
    """How Stage I makes and records its vector."""

    name: str
    summary: str
    image_directions: str  # mean_diff | attribution
    calibration: str  # capture (benign mean at the captured position) | response (benign answers' tokens)
    layer_choice: str  # suggested | best
    steer_at: str  # recorded in the vector: what steering uses unless told otherwise
    sweep_alpha: bool
    faithful: bool  # a published method (True) or the project's own settings


PRESETS: dict[str, Stage1Preset] = {p.name: p for p in (
    Stage1Preset("workbench", "the project's own Stage I: mean-difference directions, benign mean at the captured "
                 "position, Stage I's suggested layers, every position steered", "mean_diff", "capture", "suggested",
                 "all", False, False),
    Stage1Preset("astra", "ASTRA's protocol: attribution directions for image sources, benign mean over the model's "
                 "own benign answers, one layer (the best held-out), the last position of every forward call, "
                 "α chosen by a sweep on the training data", "attribution", "response", "best", "last", True, True),
)}


def get_preset(name: str) -> Stage1Preset:
    """The named Stage I preset, or an error listing them."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown Stage I preset {name!r}; use one of {', '.join(PRESETS)}") from None
