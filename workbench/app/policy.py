"""The hosted dual-use policy, decided on the steering's effect rather than on the sign a visitor types.

A visitor controls both α and the direction's orientation (swap the labels of an upload and Stage I's direction
points the other way; `-1 * v` composes the same). So the check looks at what each summand of the vector does at each
steered layer: its rule's harm sign (`SteeringRule.toward_harm`, stated for a direction pointing benign -> harmful)
applied to α times the summand's scale, times, for rules whose effect flips with the direction (additive, adaptive;
not ablation, which removes or amplifies a projection whichever way it points) and when the host gave a reference
(its own Stage I vectors for the model), the orientation of the summand's direction against the reference's at that
layer. Directions nearly orthogonal to the reference (|cos| below ALIGNED) do not move the host's harm direction and
are let through: the policy guards that direction only, not every harm a direction could carry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..steer.rules import get_rule
from ..steer.vectors import SteeringVector

ALIGNED = 0.1  # |cos(summand, reference)| at or above this counts as along the host's harm direction


def harm_push(vector: SteeringVector, mode: str, alpha: float, layers: Sequence[int] | None = None,
              reference: SteeringVector | None = None) -> str | None:
    """Why this steering pushes toward harm (a layer and what decided it), or None when it does not."""
    rule = get_rule(mode)
    if rule.toward_harm is None:
        return None
    steered = set(layers) if layers else set(vector.layers)
    for part in vector.components():
        for layer in sorted(steered & set(part.directions)):
            strength = alpha * part.scale(layer)
            how = "its scale and α"
            if reference is not None and layer in reference.directions and rule.odd:
                cos = float(torch.nn.functional.cosine_similarity(part.directions[layer].float().flatten(),
                                                                  reference.directions[layer].float().flatten(),
                                                                  dim=0))
                if abs(cos) < ALIGNED:
                    continue  # not along the host's harm direction at this layer
                strength *= 1.0 if cos > 0 else -1.0
                how = f"cos {cos:+.2f} with the host's reference direction, its scale and α"
            if rule.toward_harm(strength):
                return f"layer {layer}: {mode} pushes toward harm ({how})"
    return None
