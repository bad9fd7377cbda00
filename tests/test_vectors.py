"""SteeringVector files: round trip, checks against a model, refusal of non-safetensors, GGUF export."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import tiny

from workbench.steer.steering import Steering, generate, steer_layer
from workbench.steer.vectors import SteeringVector, VectorError, VectorFileError


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


def _steered(vector: SteeringVector, mode: str, hidden: torch.Tensor, alpha: float = 1.5) -> torch.Tensor:
    """What steering does to the same hidden states at every layer of `vector` (stacked [L, ...])."""
    vlm = tiny("llava")
    return torch.stack([steer_layer(hidden, step.parts, mode) for step in Steering(vector, mode, alpha).plan(vlm)])


@pytest.mark.parametrize("mode", ["additive", "ablation", "adaptive"])
def test_arithmetic_is_defined_on_effects(mode: str, tmp_path) -> None:
    v, w = _vector(), _vector() * 0.5 + SteeringVector({1: torch.randn(32)}, {1: torch.zeros(32)})
    hidden = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1)) * 3
    change = lambda vector: _steered(vector, mode, hidden) - hidden  # noqa: E731
    torch.testing.assert_close(change(v + v), change(2 * v))
    torch.testing.assert_close(change(-v), -change(v))
    torch.testing.assert_close(_steered(v * 0, mode, hidden), hidden.expand(3, *hidden.shape), rtol=0, atol=0)
    torch.testing.assert_close(change(v + w), change(v) + change(w))
    (v + w).save(tmp_path / "sum.safetensors")
    torch.testing.assert_close(change(SteeringVector.load(tmp_path / "sum.safetensors")), change(v + w))


def test_arithmetic_on_generated_tokens() -> None:
    vlm = tiny("llava")
    v = SteeringVector({1: torch.randn(32, generator=torch.Generator().manual_seed(2))})
    items = [(None, "hello there"), (None, "what is this")]
    plain = generate(vlm, items, None, max_new_tokens=8)
    assert generate(vlm, items, Steering(v * 0, "additive", 30.0), max_new_tokens=8) == plain
    doubled = generate(vlm, items, Steering(2 * v, "additive", 30.0), max_new_tokens=8)
    assert doubled != plain and generate(vlm, items, Steering(v + v, "additive", 30.0), max_new_tokens=8) == doubled


def test_gguf_holds_exactly_what_additive_steering_adds(tmp_path) -> None:
    import gguf

    vector = _vector() + SteeringVector({1: torch.randn(32)}) * 2
    note = vector.to_gguf(tmp_path / "v.gguf", alpha=-4.0)
    assert "--control-vector v.gguf" in note and "additive" in note
    reader = gguf.GGUFReader(str(tmp_path / "v.gguf"))
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "controlvector"
    field = lambda name: reader.fields[name].parts[-1]  # noqa: E731 - the last part holds the value
    assert bytes(field("controlvector.model_hint")).decode() == "llama"  # what llama.cpp reads
    assert int(field("controlvector.layer_count")[0]) == 3
    recorded = bytes(field("workbench.steer.steering")).decode()
    assert recorded.startswith("additive, α = -4") and "approximation" not in recorded and "approximation" not in note
    tensors = {t.name: t for t in reader.tensors}
    assert sorted(tensors) == ["direction.1", "direction.2", "direction.3"]  # llama.cpp counts layers from 1
    hidden = torch.randn(4, 32)
    steered = _steered(vector, "additive", hidden, alpha=-4.0)
    for index, layer in enumerate(vector.layers):
        tensor = tensors[f"direction.{layer + 1}"]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        added = torch.from_numpy(np.asarray(tensor.data).copy())
        torch.testing.assert_close(hidden + added, steered[index])  # llama.cpp adds the file's vector as is


def test_gguf_refuses_what_a_constant_vector_cannot_express(tmp_path) -> None:
    vector = _vector()
    with pytest.raises(VectorError, match="no constant vector is exact"):
        vector.to_gguf(tmp_path / "a.gguf", alpha=1.0, mode="adaptive")
    with pytest.raises(VectorError, match="cannot be written as a constant added vector"):
        vector.to_gguf(tmp_path / "b.gguf", alpha=1.0, mode="ablation")
    note = vector.to_gguf(tmp_path / "c.gguf", alpha=1.0, mode="adaptive", approximate=True)
    assert "approximation" in note
    added = vector.added_vectors(1.0, "adaptive", approximate=True)[0]
    unit = vector.directions[0] / vector.directions[0].norm()
    torch.testing.assert_close(added, -vector.calibration[0].norm() * unit)
    assert not (tmp_path / "a.gguf").exists() and not (tmp_path / "b.gguf").exists()


def test_exported_vectors_follow_per_layer_strengths_and_short_directions() -> None:
    """Stage II's per-layer scales and a direction shorter than 1 reach the exported vector exactly (mutation
    testing found both unchecked)."""
    direction, mean = torch.full((32,), 0.01), torch.full((32,), 2.0)  # ‖direction‖ = 0.057
    vector = SteeringVector({0: direction, 1: direction}, {0: mean, 1: mean}, scales={0: 0.5, 1: 3.0})
    unit = direction / direction.norm()
    additive = vector.added_vectors(-2.0, "additive")
    torch.testing.assert_close(additive[0], -2.0 * 0.5 * unit)
    torch.testing.assert_close(additive[1], -2.0 * 3.0 * unit)
    adaptive = vector.added_vectors(1.5, "adaptive", approximate=True)
    torch.testing.assert_close(adaptive[1], -1.5 * 3.0 * mean.norm() * unit)
    with pytest.raises(VectorError, match="needs the benign mean of layer 0"):
        SteeringVector({0: direction}).added_vectors(1.0, "adaptive", approximate=True)


def test_export_defaults_and_notes_are_exactly_what_a_user_reads(tmp_path) -> None:
    vector = _vector()
    torch.testing.assert_close(vector.added_vectors(2.0)[1], vector.added_vectors(2.0, "additive")[1])
    with pytest.raises(VectorError) as refused:
        vector.added_vectors(2.0, "adaptive")  # the approximation is asked for, never assumed
    assert str(refused.value) == ("adaptive steering depends on each hidden state, so no constant vector is exact; ask "
                                  "for the approximation (-α·‖h̄‖·v̂, labelled as such) or export additive steering")
    with pytest.raises(VectorError) as refused:
        vector.added_vectors(2.0, "ablation")
    assert str(refused.value) == ("ablation steering cannot be written as a constant added vector; export additive "
                                  "steering (or adaptive with the approximation)")
    assert vector.to_gguf(tmp_path / "v.gguf", alpha=-4.0) == (
        "additive, α = -4, layers [0, 1, 2]; use with llama.cpp `--control-vector v.gguf` (strength 1: α is in the "
        "file)")
    assert vector.to_gguf(tmp_path / "w.gguf", alpha=0.5, mode="adaptive", approximate=True).startswith(
        "adaptive (approximation: -α·‖h̄‖·v̂), α = 0.5, layers [0, 1, 2]; ")


def test_scaling_and_selecting_keep_per_layer_strengths_and_metadata() -> None:
    direction = torch.full((8,), 0.5)
    vector = SteeringVector({0: direction, 1: direction}, {0: torch.zeros(8), 1: torch.zeros(8)},
                            {"model": "organism", "num_layers": 2}, scales={0: 0.5, 1: 3.0})
    doubled = vector * 2
    for layer in (0, 1):
        torch.testing.assert_close(doubled.added_vectors(1.0)[layer], 2 * vector.added_vectors(1.0)[layer])
    assert doubled.metadata["model"] == "organism" and vector.select([1]).metadata["model"] == "organism"
    torch.testing.assert_close(vector.select([1]).added_vectors(1.0)[1], vector.added_vectors(1.0)[1])
    with pytest.raises(VectorError) as error:
        vector.select([])
    assert str(error.value) == "a steering vector needs at least one layer"
    calibrated = SteeringVector({0: direction, 1: direction}, {0: torch.ones(8), 1: torch.full((8,), 2.0)})
    adaptive = calibrated.select([1]).added_vectors(1.0, "adaptive", approximate=True)  # needs layer 1's benign mean
    torch.testing.assert_close(adaptive[1], calibrated.added_vectors(1.0, "adaptive", approximate=True)[1])
    summed = vector + SteeringVector({1: direction}, metadata={"model": "organism", "method": "pca"})
    for derived in (summed * 2, summed.select([1])):  # each summand keeps its own provenance
        assert [part.metadata for part in derived.components()][1:] == [{"model": "organism", "method": "pca"}]


def test_the_fingerprint_is_stable_and_tells_directions_calibration_and_strengths_apart() -> None:
    """Stage II checkpoints record it and refuse to resume from other vectors: its value must not drift."""
    vector = SteeringVector({0: torch.arange(4.0)}, {0: torch.ones(4)}, {}, scales={0: 2.0})
    assert vector.fingerprint() == "aa318de40e37085d"  # golden: changing the hash strands saved runs
    swapped = SteeringVector({0: torch.ones(4)}, {0: torch.arange(4.0)}, {}, scales={0: 2.0})
    unscaled = SteeringVector({0: torch.arange(4.0)}, {0: torch.ones(4)}, {})
    prints = {vector.fingerprint(), swapped.fingerprint(), unscaled.fingerprint(), (vector + vector).fingerprint()}
    assert len(prints) == 4


def test_tensor_names_of_addends_parse_and_others_stay_plain() -> None:
    from workbench.steer.vectors import _parse_tensor_name

    assert _parse_tensor_name("addend2.direction.5") == (2, "direction", "5")
    assert _parse_tensor_name("direction.5") == (0, "direction", "5")
    assert _parse_tensor_name("addend0.direction.5") == (0, "addend0", "direction.5")  # addends count from 1
    assert _parse_tensor_name("addendx.direction.5") == (0, "addendx", "direction.5")


def test_a_saved_vector_says_its_format_beside_its_metadata_and_odd_files_get_exact_messages(tmp_path) -> None:
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from workbench.steer.vectors import FORMAT, VectorFileError

    vector = _vector()
    vector.save(tmp_path / "v.safetensors")
    with safe_open(str(tmp_path / "v.safetensors"), framework="pt") as handle:
        assert handle.metadata()["format"] == FORMAT
    assert json.loads((tmp_path / "v.json").read_text()) == vector.metadata  # the readable copy beside it

    def refused(tensors: dict, metadata: dict | None = None) -> str:
        save_file(tensors, str(tmp_path / "odd.safetensors"), metadata=metadata)
        with pytest.raises(VectorFileError) as error:
            SteeringVector.load(tmp_path / "odd.safetensors")
        return str(error.value)

    expected = ("odd.safetensors: unexpected tensor {} {}; expected 1-D tensors named [addend<i>.]direction.<layer>, "
                "calibration.<layer> or scale.<layer>")
    assert refused({"direction.1": torch.ones(2, 3)}) == expected.format("'direction.1'", "(2, 3)")
    assert refused({"direction.x": torch.ones(3)}) == expected.format("'direction.x'", "(3,)")
    assert refused({"direction.1": torch.ones(3)}, {"metadata": "{"}) == (
        "odd.safetensors: metadata is not valid JSON (or nested too deep)")
    assert refused({"direction.1": torch.ones(3)}, {"metadata": "[1]"}) == (
        "odd.safetensors: metadata must be a JSON object, found list")
    assert refused({}, {"metadata": json.dumps({"model": "organism"})}) == (  # a valid file that holds nothing
        "odd.safetensors: a steering vector needs at least one layer")
    (tmp_path / "odd.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(VectorFileError) as error:
        SteeringVector.load(tmp_path / "odd.safetensors")
    assert str(error.value).startswith("odd.safetensors is not a safetensors file (") and str(error.value).endswith(
        "); vectors are loaded only from .safetensors written by the workbench")
    save_file({"addend1.direction.1": torch.ones(3), "direction.1": torch.ones(3)}, str(tmp_path / "sum.safetensors"),
              metadata={"metadata": json.dumps({"model": "organism"})})
    loaded = SteeringVector.load(tmp_path / "sum.safetensors")
    assert loaded.metadata["model"] == "organism" and len(loaded.components()) == 2
    assert all(part.metadata == {} or part.metadata.get("model") == "organism" for part in loaded.components())


def test_malformed_vectors_and_steerings_get_exact_messages() -> None:
    """What a user sees when a vector or a steering cannot be built, and the boundaries of what is accepted."""
    from workbench.steer.steering import Steering

    one = torch.ones(4)
    cases = [(lambda: SteeringVector({}), "a steering vector needs at least one layer"),
             (lambda: SteeringVector({-1: one, 2: one}), "layer numbers must be 0 or more, got [-1]"),
             (lambda: SteeringVector({0: one}, addends=(SteeringVector({0: one}) + SteeringVector({1: one}),)),
              "a summand must be a plain vector of hidden size 4"),
             (lambda: SteeringVector({0: one}, addends=(SteeringVector({0: torch.ones(3)}),)),
              "a summand must be a plain vector of hidden size 4")]
    for build, message in cases:
        with pytest.raises(VectorError) as error:
            build()
        assert str(error.value) == message
    partly = SteeringVector({0: one, 1: one}, {0: torch.zeros(4)})  # no benign mean for layer 1
    assert Steering(partly, "adaptive", 1.0, (0,)).describe()["layers"] == [0]  # layer 1 is not steered: fine
    with pytest.raises(ValueError) as error:
        Steering(partly, "adaptive", 1.0)
    assert str(error.value) == ("adaptive steering needs calibration means for layer(s) [1]; recompute the vector "
                                "with Stage I or use a rule without calibration")
    with pytest.raises(ValueError) as error:
        Steering(partly, "additive", 1.0, steer_at="answer")
    assert str(error.value) == "unknown steer_at 'answer'; use one of all, prompt, generated, last"


def test_a_vector_for_another_model_says_which_model_it_was_made_for() -> None:
    vlm = tiny("llava")  # hidden size 32, layers 0..2
    for metadata, made_for in (({"model": "organism"}, "organism"), ({}, "an unknown model")):
        with pytest.raises(VectorError) as error:
            SteeringVector({0: torch.ones(8)}, metadata=metadata).check_compatible(vlm)
        assert str(error.value) == (f"vector hidden size 8 does not match the model's hidden size 32 (vector made "
                                    f"for {made_for}, model is tiny-random:llava)")
    SteeringVector({2: torch.ones(32)}).check_compatible(vlm)  # the last layer fits
    with pytest.raises(VectorError) as error:
        SteeringVector({3: torch.ones(32)}).check_compatible(vlm)
    assert str(error.value) == "vector layer(s) [3] are outside the model's layers 0..2"
