"""Capture over a mixed dataset, activation files, cancellation, and steering a bf16 model."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import make_image, tiny

from workbench.core.models import load_vlm
from workbench.core.progress import Cancelled
from workbench.core.records import Record
from workbench.stage1.activations import Activations, capture
from workbench.steer.steering import Steering, generate
from workbench.steer.vectors import SteeringVector


def _records() -> list[Record]:
    records = []
    for i in range(5):
        records.append(Record(f"tell me how to bake a cake {'now ' * i}", "benign", "text"))
        records.append(Record("tell me how to do the activity in the image", "harmful", "typo",
                              image_data=make_image("white", (48, 48), f"bomb {i}")))
    return records


def test_mixed_dataset_capture_is_in_record_order_and_batch_size_invariant(tmp_path) -> None:
    vlm = tiny("llava")
    records = _records()
    small = capture(vlm, records, batch_size=2, show_bar=False)
    whole = capture(vlm, records, batch_size=16, show_bar=False)
    assert small.values.shape == (10, 3, 32) and small.labels == [r.label for r in records]
    torch.testing.assert_close(small.values, whole.values, atol=1e-5, rtol=0)
    single = capture(vlm, records[1:2], batch_size=1, show_bar=False)
    torch.testing.assert_close(single.values[0], small.values[1], atol=1e-5, rtol=0)
    small.save(tmp_path / "acts.safetensors")
    loaded = Activations.load(tmp_path / "acts.safetensors")
    assert torch.equal(loaded.values, small.values) and loaded.sources == small.sources
    assert loaded.metadata["position"] == "last" and loaded.metadata["num_layers"] == 3


def test_capture_reports_progress_and_can_be_cancelled() -> None:
    vlm = tiny("llava")
    cancel = threading.Event()
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int, _: str) -> None:
        seen.append((done, total))
        if done == 2:
            cancel.set()

    with pytest.raises(Cancelled, match="after 3 of 6"):
        capture(vlm, _records(), batch_size=2, progress=progress, cancel=cancel, show_bar=False)
    assert seen[0] == (0, 6)  # 5 text + 5 image records in batches of 2


def test_bfloat16_model_steers_with_float32_vectors() -> None:
    vlm = load_vlm("tiny-random:llava", device="cpu", dtype="bf16")
    assert vlm.dtype == torch.bfloat16
    items = [(make_image("red"), "what is this"), (None, "hello")]
    vector = SteeringVector({1: torch.randn(32)}, {1: torch.zeros(32)})
    plain = generate(vlm, items, None, max_new_tokens=6)
    assert generate(vlm, items, Steering(vector, "adaptive", 0.0), max_new_tokens=6) == plain
    assert generate(vlm, items, Steering(vector, "additive", 100.0), max_new_tokens=6) != plain
