"""GPU checks (run by scripts/gpu_check.sh on a lent GPU; skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_image
from workbench.models import load_vlm
from workbench.steering import Steering, generate, steered_logits
from workbench.vectors import SteeringVector

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "gemma3"])
def test_bf16_cuda_steering_is_identity_at_zero_and_differentiable(arch: str) -> None:
    vlm = load_vlm(f"tiny-random:{arch}", device="cuda", dtype="bf16")
    items = [(make_image("red"), "what is this"), (None, "hello there")]
    vector = SteeringVector({1: torch.randn(vlm.hidden_size)}, {1: torch.zeros(vlm.hidden_size)})
    plain = generate(vlm, items, None, max_new_tokens=6)
    assert generate(vlm, items, Steering(vector, "adaptive", 0.0), max_new_tokens=6) == plain
    parameter = torch.nn.Parameter(torch.randn(vlm.hidden_size, device="cuda"))
    logits = steered_logits(vlm, vlm.encode(items[:1]), {1: parameter}, "additive", 3.0)
    logits.float().log_softmax(-1)[:, -1, 0].sum().backward()
    assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
