"""SteeringVector files: round trip, checks against a model, refusal of non-safetensors, GGUF export."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import tiny

from workbench.vectors import SteeringVector, VectorError, VectorFileError


def _vector(hidden: int = 32, layers: int = 3, model: str = "tiny-random:llava") -> SteeringVector:
    generator = torch.Generator().manual_seed(0)
    return SteeringVector({i: torch.randn(hidden, generator=generator) for i in range(layers)},
                          {i: torch.randn(hidden, generator=generator) for i in range(layers)},
                          {"model": model, "num_layers": layers, "method": "mean_diff"})


def test_round_trip_through_safetensors(tmp_path) -> None:
    vector = _vector()
    vector.save(tmp_path / "v.safetensors")
    loaded = SteeringVector.load(tmp_path / "v.safetensors")
    assert loaded.layers == vector.layers and loaded.metadata == vector.metadata
    for layer in vector.layers:
        assert torch.equal(loaded.directions[layer], vector.directions[layer])
        assert torch.equal(loaded.calibration[layer], vector.calibration[layer])
    assert (tmp_path / "v.json").is_file()


def test_wrong_hidden_size_names_both_sizes() -> None:
    vlm = tiny("llava")
    with pytest.raises(VectorError, match=r"hidden size 64 .* hidden size 32"):
        _vector(hidden=64).check_compatible(vlm)


def test_layer_out_of_range_and_layer_count_mismatch() -> None:
    vlm = tiny("llava")
    with pytest.raises(VectorError, match="outside the model's layers 0..2"):
        SteeringVector({7: torch.ones(32)}).check_compatible(vlm)
    with pytest.raises(VectorError, match="5 layers"):
        _vector(layers=5).select([0]).check_compatible(vlm)


def test_nan_and_empty_vectors_are_refused() -> None:
    with pytest.raises(VectorError, match="NaN or Inf"):
        SteeringVector({0: torch.tensor([1.0, float("nan")])})
    with pytest.raises(VectorError, match="at least one layer"):
        SteeringVector({})


def test_pickle_renamed_safetensors_is_refused_without_unpickling(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(VectorFileError, match="not a safetensors file"):
        SteeringVector.load(path)
    torch.save({"direction.0": torch.ones(3)}, tmp_path / "torch.safetensors")
    with pytest.raises(VectorFileError, match="not a safetensors file"):
        SteeringVector.load(tmp_path / "torch.safetensors")
    assert not marker.exists()


def test_arithmetic_scales_the_effect_and_survives_a_round_trip(tmp_path) -> None:
    vector = _vector()
    doubled = vector * 2.0
    assert doubled.scale(1) == 2.0 and torch.equal(doubled.directions[1], vector.directions[1])
    assert (-vector).scale(0) == -1.0
    torch.testing.assert_close((vector + vector).directions[2], vector.directions[2] * 2)
    doubled.save(tmp_path / "d.safetensors")
    assert SteeringVector.load(tmp_path / "d.safetensors").scales == {0: 2.0, 1: 2.0, 2: 2.0}


def test_gguf_control_vector_uses_llama_cpp_layout(tmp_path) -> None:
    import gguf

    vector = _vector()
    vector.to_gguf(tmp_path / "v.gguf")
    reader = gguf.GGUFReader(str(tmp_path / "v.gguf"))
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "controlvector"
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.2", "direction.3"]  # llama.cpp counts layers from 1
    for layer in vector.layers:
        tensor = tensors[f"direction.{layer + 1}"]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(np.asarray(tensor.data), vector.directions[layer].numpy())
