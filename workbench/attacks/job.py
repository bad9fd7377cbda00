"""The PGD attack job: a spec and a folder in; the adversarial image(s), attack.json (settings and loss curve),
dataset.jsonl (each image paired with each prompt, which stage1, stage2, eval and compare read) and run.json out."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from ..core.io import atomic_write_text
from ..core.jobs import write_job_info
from ..core.models import VLM
from ..core.records import Record
from ..core.runlock import RunLock
from ..core.sampling import stratified_sample
from ..steer.steering import Steerer
from .pgd import PGDResult, PGDSettings, pgd_attack
from .typographic import FIGSTEP_PROMPT, TypographicStyle, render_instruction


def pick_prompts(records: Sequence[Record], label: str, source: str | None, limit: int | None, where: str
                 ) -> list[Record]:
    """The records whose prompts an attack is fitted on: `label` ("all": any) and `source` (None or "": any), a
    stratified sample of `limit`; none left is an error naming `where`."""
    chosen = [r for r in records if label in ("all", r.label) and (not source or r.source == source)]
    if not chosen:
        raise ValueError(f"{where} has no {label} records" + (f" of source {source}" if source else ""))
    return stratified_sample(chosen, limit)


def blank_image() -> Image.Image:
    """The default clean starting image: blank light grey (resized to the model's input size by the attack)."""
    return Image.new("RGB", (64, 64), (235, 235, 235))


@dataclass(frozen=True)
class PGDSpec:
    """What a user chose: the model, the prompts' data set, the target set's name and the PGD settings."""

    model: str
    prompts: str
    targets: str  # toxic | affirmative | a file
    settings: PGDSettings
    universal: bool = True
    image: str = "blank"  # the clean starting image: a file name or "blank"
    vectors: str | None = None  # an adaptive attack runs through these (steered)
    steering: tuple[tuple[str, Any], ...] = ()  # how they steer, where it is not as they record (mode, alpha, ...)

    @property
    def source(self) -> str:
        """The dataset source of the images: pgd-<target>-eps<levels> (e.g. pgd-affirmative-eps32)."""
        levels = self.settings.epsilon_levels
        name = self.targets if self.targets in ("toxic", "affirmative") else "file"
        return f"pgd-{name}-" + ("unconstrained" if levels is None else f"eps{levels}") + \
            ("-adaptive" if self.vectors else "")


def run_pgd_job(spec: PGDSpec, folder: str | Path, vlm: VLM, image: Image.Image, records: Sequence[Record],
                targets: Sequence[str], steering: Steerer | None = None,
                progress: Callable[[int, int, str], None] | None = None, cancel: threading.Event | None = None
                ) -> PGDResult:
    """Attack with `records`' prompts toward `targets`; write the folder."""
    out = Path(folder)
    with RunLock(out):
        result = pgd_attack(vlm, image, [r.prompt for r in records], targets, spec.settings, spec.universal,
                            steering, progress, cancel)
        names = []
        for number, picture in enumerate(result.images):
            names.append(f"pgd-{number}.png")
            picture.save(out / names[-1])
        rows = []
        for index, record in enumerate(records):
            rows.append({"prompt": record.prompt, "label": "harmful", "image": names[0 if spec.universal else index],
                         "source": spec.source, **({"behavior": record.behavior} if record.behavior else {})})
        atomic_write_text(out / "dataset.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        atomic_write_text(out / "attack.json", json.dumps({
            "settings": result.settings, "losses": result.losses, "final_loss": result.final_loss,
            "clean_loss": result.clean_loss, "source": spec.source}, indent=1))
        write_job_info(out, "attack", spec, images=names, records=len(rows), source=spec.source,
                       final_loss=round(result.final_loss, 4), clean_loss=round(result.clean_loss, 4))
    return result


@dataclass(frozen=True)
class TypographicSpec:
    """What a user chose for FigStep-style images: where the instructions come from, the style, the neutral prompt."""

    instructions: str  # a data set (its harmful records' behaviours, else prompts) or a text file, one per line
    style: TypographicStyle = TypographicStyle()
    prompt: str = FIGSTEP_PROMPT
    source: str = "typographic"


def run_typographic_job(spec: TypographicSpec, folder: str | Path, instructions: Sequence[str]) -> list[Record]:
    """Render each instruction into `folder` (typo-N.png) with dataset.jsonl pairing it with the neutral prompt
    (label harmful, the instruction as its behaviour) and run.json; returns the records as read back."""
    from ..core.records import read_jsonl

    out = Path(folder)
    with RunLock(out):
        rows = []
        for number, instruction in enumerate(instructions):
            render_instruction(instruction, spec.style).save(out / f"typo-{number}.png")
            rows.append({"prompt": spec.prompt, "label": "harmful", "image": f"typo-{number}.png",
                         "source": spec.source, "behavior": " ".join(instruction.split())})
        atomic_write_text(out / "dataset.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        write_job_info(out, "attack", spec, records=len(rows), source=spec.source)
    return read_jsonl(out / "dataset.jsonl")
