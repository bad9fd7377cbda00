"""Stage I end to end: dataset -> activations -> per-layer directions and scores -> a SteeringVector."""

from __future__ import annotations

import csv
import io
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..core.distributed import SINGLE, Shard
from ..core.io import atomic_write_text
from ..core.models import VLM
from ..core.progress import ProgressFn
from ..core.records import Record, require_both_labels
from ..steer.steering import RECORDED, SUGGESTED
from ..steer.vectors import SteeringVector
from . import directions as D
from .activations import Activations, Position, capture
from .attribution import AttributionSettings, attribution_direction
from .calibration import response_means
from .presets import get_preset
from .separation import LayerScore, layer_scores


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def source_vector_file(source: str) -> str:
    """The file name of one source's vectors in a Stage I folder (the source name made filesystem-safe)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in source)
    return f"vectors_source_{safe}.safetensors"


@dataclass
class Stage1Result:
    """Everything Stage I computes; `save(out_dir)` writes it as files."""

    activations: Activations
    vector: SteeringVector
    scores: list[LayerScore]
    per_source: dict[str, torch.Tensor]
    source_similarity: torch.Tensor | None  # [layers, S, S] or None with one source

    def best_layer(self) -> int:
        """The layer with the highest held-out AUROC, ties broken by Cohen's d (for figures; whether it
        separates at all is `suggested_layers()`'s question)."""
        return max(self.scores, key=lambda s: (_finite(s.auroc), _finite(s.separation))).layer

    @property
    def null(self) -> float:
        """The family-wise shuffled-label AUROC bar (NaN for runs saved before held-out scores)."""
        return self.scores[0].auroc_null if self.scores else math.nan

    def best_steering_layer(self) -> int:
        """The best held-out layer, leaving out the last (steering it only shifts the logits) unless it is the only
        one: the one layer the `astra` preset steers."""
        candidates = self.scores[:-1] or self.scores
        return max(candidates, key=lambda s: (_finite(s.auroc), _finite(s.separation))).layer

    def suggested_layers(self, tolerance: float = 0.005, limit: int = 3) -> list[int]:
        """Layers to steer by default: significant layers (held-out AUROC above the family-wise null) within
        `tolerance` of the best of them, leaving out the last layer (steering it only shifts the logits)
        unless the model has one layer; at most `limit`. Empty when no layer separates the labels."""
        candidates = [s for s in (self.scores[:-1] or self.scores) if s.significant]
        if not candidates:
            return []
        best = max(s.auroc for s in candidates)
        chosen = sorted((s for s in candidates if s.auroc >= best - tolerance),
                        key=lambda s: (-s.auroc, -s.separation))[:limit]
        return sorted(s.layer for s in chosen)

    def verdict(self) -> str:
        """One line a reader can quote: which layers separate, against which bar, or that none does."""
        if math.isnan(self.null):
            return ("no family-wise null in this run (it predates held-out layer scores, or a class has one "
                    "record); rerun Stage I before choosing layers")
        suggested = self.suggested_layers()
        null = f"{self.null:.3f}, the 95th percentile of the best of {len(self.scores)} layers under shuffled labels"
        bar = f"held-out AUROC above {null}"
        if not suggested:
            if any(score.significant for score in self.scores):  # only the last layer, which is not suggested
                last = self.scores[-1]
                return (f"only the last layer separates harmful from benign (held-out AUROC {last.auroc:.3f} above "
                        f"{null}); steering it only shifts the logits, so no layer is suggested")
            return f"no layer separates harmful from benign: every held-out AUROC is at most {null}"
        return (f"best layer {self.best_layer()} (held-out AUROC {self.scores[self.best_layer()].auroc:.3f}); "
                f"suggested steering layers {','.join(map(str, suggested))}: {bar}")

    def scores_csv(self) -> str:
        buffer = io.StringIO()
        fields = list(asdict(self.scores[0]))
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        for score in self.scores:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(score).items()})
        return buffer.getvalue()

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write activations, vectors, per-source vectors, layer_scores.csv and source similarity."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"activations": out / "activations.safetensors", "vectors": out / "vectors.safetensors",
                 "layer_scores": out / "layer_scores.csv"}
        self.activations.save(paths["activations"])
        self.vector.metadata.update(stage="I", run=out.name)  # the producing run (a folder name, no path)
        self.vector.save(paths["vectors"])
        atomic_write_text(paths["layer_scores"], self.scores_csv())
        for source, directions in self.per_source.items():
            per_source = SteeringVector(dict(enumerate(directions)), self.vector.calibration,
                                        {**self.vector.metadata, "sources": [source]})
            per_source.save(out / source_vector_file(source))
        if self.source_similarity is not None:
            paths["source_similarity"] = out / "source_similarity.json"
            atomic_write_text(paths["source_similarity"], json.dumps(
                {"sources": list(self.per_source), "cosine": self.source_similarity.tolist()}))
        return paths


def load_stage1(out_dir: str | Path) -> Stage1Result:
    """Reopen a saved Stage I folder (activations, vectors, scores, per-source vectors, similarity)."""
    out = Path(out_dir)
    activations = Activations.load(out / "activations.safetensors")
    vector = SteeringVector.load(out / "vectors.safetensors")
    rows = list(csv.DictReader((out / "layer_scores.csv").read_text(encoding="utf-8").splitlines()))
    scores = [LayerScore(int(r["layer"]), float(r["probe_accuracy"]), float(r["auroc"]), float(r["separation"]),
                         float(r["direction_norm"]), float(r.get("auroc_null") or "nan"),
                         float(r.get("auroc_in_sample") or "nan"), float(r.get("probe_baseline") or "nan"))
              for r in rows]
    per_source: dict[str, torch.Tensor] = {}
    similarity = None
    similarity_path = out / "source_similarity.json"
    if similarity_path.is_file():
        saved = json.loads(similarity_path.read_text(encoding="utf-8"))
        similarity = torch.tensor(saved["cosine"])
        for source in saved["sources"]:
            part = SteeringVector.load(out / source_vector_file(source))
            per_source[source] = torch.stack([part.directions[k] for k in part.layers])
    return Stage1Result(activations, vector, scores, per_source, similarity)


def run_stage1(vlm: VLM, records: Sequence[Record], position: Position = "last", method: D.Method = "mean_diff",
               batch_size: int = 8, progress: ProgressFn | None = None, cancel: threading.Event | None = None,
               show_bar: bool = True, shard: Shard = SINGLE, preset: str = "workbench",
               attribution: AttributionSettings | None = None) -> Stage1Result:
    """Capture activations (data-parallel under torchrun: `shard`) and compute directions, scores, per-source
    directions and calibration, as the named `preset` (stage1/presets.py) makes them.

    With several sources the vector is the combined direction (each source counts equally); with
    one source it is that source's direction.
    """
    chosen = get_preset(preset)
    require_both_labels(records)
    acts = capture(vlm, records, position, batch_size, progress, cancel, show_bar, shard)
    per_source = D.per_source_directions(acts, method)
    found: dict = {}
    if chosen.image_directions == "attribution":
        per_source, found["attribution"] = _attributed(vlm, records, per_source, attribution or AttributionSettings(),
                                                       progress, cancel, show_bar)
    if len(per_source) > 1:
        combined = D.combined_direction(per_source)
    elif chosen.image_directions == "attribution":  # one source: its (possibly attributed) direction
        combined = next(iter(per_source.values()))
    else:
        combined = D.directions(acts, method)
    similarity = D.source_similarity(per_source) if len(per_source) > 1 else None
    if chosen.calibration == "response":
        calibration, used = response_means(vlm, records, batch_size=batch_size, progress=progress, cancel=cancel,
                                           show_bar=show_bar)
        found["calibration"] = f"mean over {used} benign records' greedy answers (their tokens), as ASTRA's extract_ref"
    else:
        calibration = D.benign_mean(acts)
        found["calibration"] = f"benign mean at the captured position ({position})"
    metadata = dict(acts.metadata, method=method, sources=sorted(per_source), preset=chosen.name,
                    combination="mean of unit per-source directions" if len(per_source) > 1 else "single source",
                    sign="benign->harmful", **found)
    vector = SteeringVector(dict(enumerate(combined)), dict(enumerate(calibration)), metadata)
    result = Stage1Result(acts, vector, layer_scores(acts), per_source, similarity)
    vector.metadata[SUGGESTED] = result.suggested_layers()  # steering defaults to them (`steering_for`)
    if chosen.layer_choice == "best":
        vector.metadata[RECORDED] = {"mode": "adaptive", "layers": [result.best_steering_layer()],
                                     "steer_at": chosen.steer_at}  # α: the sweep records it (evaluate/alpha.py)
    return result


def _attributed(vlm: VLM, records: Sequence[Record], per_source: dict[str, torch.Tensor],
                settings: AttributionSettings, progress: ProgressFn | None, cancel: threading.Event | None,
                show_bar: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """Image sources' directions replaced by ASTRA's attribution directions; what was found per source."""
    report: dict = {"settings": settings.describe(), "sources": {}}
    directions = dict(per_source)
    for source in per_source:
        mine = [r for r in records if r.source == source]
        if not any(r.has_image and r.label == "harmful" for r in mine):
            report["sources"][source] = "mean difference (no harmful image records)"
            continue
        direction, found = attribution_direction(vlm, mine, settings, progress, cancel, show_bar)
        found.pop("settings")
        if direction is None:
            report["sources"][source] = {"direction": "mean difference (no record had an attributed patch)", **found}
            continue
        directions[source] = direction
        report["sources"][source] = {"direction": "attribution", **found}
    return directions, report
