"""Loading the two scorers every scored job needs, in one place for the CLI, the app and the job pipelines."""

from __future__ import annotations

from dataclasses import dataclass

from .toxicity import ToxicityScorer
from .visual import NO_CLIP, ClipScorer, default_clip_spec, load_clip


@dataclass(frozen=True)
class ScorerSpec:
    """Which scorers to load: the open_clip model, and a local Detoxify checkpoint and config (None: Detoxify's
    own 'original' checkpoint, else the named offline fallback)."""

    clip: str
    detoxify_checkpoint: str | None = None
    detoxify_config: str | None = None
    detoxify_download: bool = False  # fetch Detoxify's weights when they are not cached (never unless asked)

    @classmethod
    def for_model(cls, model: str, clip: str | None = None, detoxify_checkpoint: str | None = None,
                  detoxify_config: str | None = None, detoxify_download: bool = False) -> ScorerSpec:
        """The scorers for `model`: the CLIP named, else the organism's own, none for a tiny random model, else
        ViT-B-32."""
        return cls(clip or default_clip_spec(model), detoxify_checkpoint, detoxify_config, detoxify_download)


def load_scorers(spec: ScorerSpec) -> tuple[ToxicityScorer, ClipScorer | None, str | None]:
    """(toxicity, clip, why there is no clip): Detoxify or its named fallback, and open_clip (None when it does not
    load, with the reason, so the caller can warn and go on: an offline hub, a missing folder)."""
    toxicity = ToxicityScorer.create(checkpoint=spec.detoxify_checkpoint, config_dir=spec.detoxify_config,
                                     download=spec.detoxify_download)
    if spec.clip == NO_CLIP:
        return toxicity, None, ("a tiny random model's answers have no visual consistency worth measuring; --clip "
                                "names an open_clip model (e.g. ViT-B-32:openai, fetched from the hub on first use)")
    try:
        return toxicity, load_clip(spec.clip), None
    except Exception as error:  # noqa: BLE001 - reported by the caller, which goes on without CLIP
        return toxicity, None, str(error)
