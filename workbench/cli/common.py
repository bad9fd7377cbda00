"""What the CLI commands share beyond their arguments: the scorers they load, as the arguments name them."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def scorers(args: argparse.Namespace) -> tuple[Any, Any]:
    """The toxicity scorer (saying which one runs) and the open_clip scorer (None, with a warning, when
    unavailable), as the command's arguments name them."""
    from ..rewards.scorers import ScorerSpec, load_scorers

    spec = ScorerSpec.for_model(args.model, args.clip, args.detoxify_checkpoint, args.detoxify_config,
                                args.detoxify_download)
    toxicity, clip, clip_error = load_scorers(spec)
    if clip_error is not None:
        print(f"warning: no visual-consistency score ({spec.clip + ': ' if spec.clip else ''}{clip_error})",
              file=sys.stderr)
    print(f"toxicity scorer: {toxicity.name}" + (f" [{toxicity.note}]" if toxicity.note else ""))
    return toxicity, clip


def steering_choice(args: argparse.Namespace) -> Any:
    """--mode/--alpha/--layers/--steer-at as a `SteeringChoice` (unset: the vector's recorded settings)."""
    from ..evaluate.job import SteeringChoice

    return SteeringChoice(args.mode, args.alpha, tuple(args.layers) if args.layers else None, args.steer_at)
