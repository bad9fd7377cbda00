"""The benign mean h̄ the adaptive rule centres on, as ASTRA calibrates it: on the model's own response tokens.

ASTRA (`extract_ref/`) generates an answer for each benign reference image, runs prompt + answer once and averages
the hidden states over the answer's tokens, then over images. Here the benign records of the training data are
answered greedily (ASTRA samples at temperature 0.2: greedy keeps the run repeatable) and averaged the same way. The
project's own calibration (`workbench` preset) is the benign mean at the captured position (`directions.benign_mean`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from ..core.models import VLM, batches_by_modality
from ..core.progress import ProgressFn, track
from ..core.records import Record
from ..steer.steering import generate_ids
from ..steer.teacher_forcing import pack_responses
from .activations import capture_batch

RESPONSE_TOKENS = 32  # tokens generated per benign record for the calibration


def response_means(vlm: VLM, records: Sequence[Record], max_new_tokens: int = RESPONSE_TOKENS, batch_size: int = 8,
                   progress: ProgressFn | None = None, cancel: threading.Event | None = None, show_bar: bool = True
                   ) -> tuple[torch.Tensor, int]:
    """([layers, H] mean over benign records of the mean hidden state over their answer's tokens, records used)."""
    benign = [r for r in records if r.label == "benign"]
    if not benign:
        raise ValueError("response-token calibration needs benign records")
    items = [r.item for r in benign]
    answers = generate_ids(vlm, items, None, max_new_tokens=max_new_tokens, batch_size=batch_size)
    used = [i for i, answer in enumerate(answers) if answer]
    if not used:
        raise ValueError("the model answered every benign record with nothing; response-token calibration has no "
                         "tokens to average")
    total = torch.zeros(vlm.num_layers, vlm.hidden_size)
    batches = batches_by_modality([items[i] for i in used], batch_size)
    for batch in track(batches, len(batches), "calibrating on benign answers", progress, cancel, show_bar):
        chosen = [used[j] for j in batch]
        packed, is_answer = pack_responses(vlm, [items[i] for i in chosen], [answers[i] for i in chosen])
        weights = is_answer.float() / is_answer.float().sum(1, keepdim=True)
        total += capture_batch(vlm, packed, weights).sum(0)
    return total / len(used), len(used)
