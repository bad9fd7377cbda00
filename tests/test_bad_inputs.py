"""The bad-input corpus: malformed images, datasets, parameters, vectors and names, through the library
and the CLI. Each must fail with a message that says what to fix (or, for odd-but-valid images, work)."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image, tiny
from PIL import Image

from workbench.app.backend import Workbench
from workbench.cli.main import main
from workbench.core.records import DatasetError, Record
from workbench.core.runs import RunStore
from workbench.data.sources import load_dataset
from workbench.evaluate.evaluation import EvalConfig, evaluate
from workbench.rewards.toxicity import ToxicityScorer
from workbench.stage1.pipeline import run_stage1
from workbench.stage2.loop import Stage2Config
from workbench.steer.steering import Steering, generate, parse_layers
from workbench.steer.vectors import SteeringVector, VectorError, VectorFileError


# --- images ------------------------------------------------------------------------------------------
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + \
        chunk(b"IEND", b"")


def _png_bytes(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


BAD_IMAGES: dict[str, tuple[Callable[[], bytes], str]] = {
    "corrupt bytes": (lambda: b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "cannot be read"),
    "truncated png": (lambda: _png_bytes(make_image("red", (64, 64)))[:60], "cannot be read"),
    "zero bytes": (lambda: b"", "cannot be read"),
    "20000x20000": (lambda: _png_header(20000, 20000), "too large"),
    "text named .png": (lambda: b"hello, I am not an image", "cannot be read"),
    "8000x8000 (over the 40 MP limit)": (lambda: _png_header(8000, 8000), "resize it below"),
}


def _dataset_with_image(tmp_path: Path, data: bytes, name: str = "img.png") -> Path:
    (tmp_path / name).write_bytes(data)
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"prompt": "p", "label": "harmful", "image": name}) + "\n")
    return path


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_images_are_refused_with_the_line_and_file(tmp_path: Path, case: str) -> None:
    make, message = BAD_IMAGES[case]
    with pytest.raises(DatasetError, match=message) as error:
        load_dataset(_dataset_with_image(tmp_path, make()))
    assert "set.jsonl line 1" in str(error.value) and "img.png" in str(error.value)


def _animated() -> bytes:
    frames = [Image.new("RGB", (20, 20), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


ODD_IMAGES: dict[str, Callable[[], bytes]] = {
    "RGBA": lambda: _png_bytes(Image.new("RGBA", (30, 20), (255, 0, 0, 128))),
    "CMYK jpeg": lambda: _png_bytes(Image.new("CMYK", (30, 20), (0, 255, 0, 0)), "JPEG"),
    "16-bit greyscale": lambda: _png_bytes(Image.fromarray((np.arange(600).reshape(20, 30) * 100).astype(np.uint16))),
    "greyscale": lambda: _png_bytes(Image.new("L", (30, 20), 128)),
    "palette": lambda: _png_bytes(Image.new("P", (30, 20), 3)),
    "1-bit": lambda: _png_bytes(Image.new("1", (30, 20), 1)),
    "greyscale + alpha": lambda: _png_bytes(Image.new("LA", (30, 20), (100, 200))),
    "animated gif": _animated,
}


@pytest.mark.parametrize("case", list(ODD_IMAGES))
def test_odd_but_valid_images_load_as_rgb_and_generate(tmp_path: Path, case: str) -> None:
    suffix = ".jpg" if "jpeg" in case else ".gif" if "gif" in case else ".png"
    [record] = load_dataset(_dataset_with_image(tmp_path, ODD_IMAGES[case](), "img" + suffix))
    image = record.load_image()
    assert image.mode == "RGB" and image.size in ((30, 20), (20, 20))
    assert generate(tiny("llava"), [record.item], max_new_tokens=2)[0] is not None


# --- datasets ----------------------------------------------------------------------------------------
BAD_DATASETS: dict[str, tuple[str, bytes, str]] = {
    "empty file": ("a.jsonl", b"", "no records"),
    "blank lines only": ("a.jsonl", b"\n\n  \n", "no records"),
    "unknown label": ("a.jsonl", b'{"prompt": "p", "label": "maybe"}\n', "unknown label 'maybe'"),
    "non-UTF-8": ("a.jsonl", '{"prompt": "caf\u00e9", "label": "benign"}\n'.encode("latin-1"), "not UTF-8"),
    "missing label column": ("a.csv", b"prompt,source\nhello,x\n", "lacks column\\(s\\) label"),
    "semicolon delimiter": ("a.csv", b"prompt;label\nhello;benign\n", "comma-separated header"),
    "JSON array instead of lines": ("a.jsonl", b'[{"prompt": "p", "label": "benign"}]\n', "one JSON object per line"),
    "a list on a line": ("a.jsonl", b'{"prompt": "p", "label": "benign"}\n["p", "benign"]\n',
                         "line 2: expected a JSON object"),
    "broken JSON": ("a.jsonl", b'{"prompt": "p", "label": \n', "not valid JSON"),
    "empty prompt": ("a.jsonl", b'{"prompt": "", "label": "benign"}\n', "missing prompt"),
    "missing image file": ("a.jsonl", b'{"prompt": "p", "label": "benign", "image": "nope.png"}\n', "does not exist"),
    "unknown format": ("a.txt", b"prompt,label\n", "unknown dataset format"),
    "CSV row with missing label value": ("a.csv", b"prompt,label\nhello,\n", "line 2: missing label"),
}


@pytest.mark.parametrize("case", list(BAD_DATASETS))
def test_bad_datasets_say_what_to_fix(tmp_path: Path, case: str) -> None:
    name, content, message = BAD_DATASETS[case]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(tmp_path / name)


def test_missing_file_one_class_and_escaping_images(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nothing.jsonl")
    with pytest.raises(DatasetError, match="no benign records"):
        run_stage1(tiny("llava"), [Record("p", "harmful"), Record("q", "harmful")], show_bar=False)
    (tmp_path / "inner").mkdir()
    make_image("red").save(tmp_path / "outside.png")
    path = tmp_path / "inner" / "set.jsonl"
    path.write_text('{"prompt": "p", "label": "benign", "image": "../outside.png"}\n')
    assert load_dataset(path)[0].has_image  # a researcher's own files may point anywhere
    with pytest.raises(DatasetError, match="leaves the dataset's folder"):
        load_dataset(path, confine=True)  # an upload may not


# --- parameters --------------------------------------------------------------------------------------
def _vector() -> SteeringVector:
    vlm = tiny("llava")
    return SteeringVector({i: torch.randn(vlm.hidden_size) for i in range(vlm.num_layers)},
                          {i: torch.zeros(vlm.hidden_size) for i in range(vlm.num_layers)})


BAD_STEERING: dict[str, tuple[dict, str]] = {
    "alpha 1e9": ({"alpha": 1e9}, "between -1000 and 1000"),
    "alpha NaN": ({"alpha": float("nan")}, "between"),
    "alpha -inf": ({"alpha": float("-inf")}, "between"),
    "negative layer": ({"layers": (-1,)}, "not in this vector"),
    "layer out of range": ({"layers": (99,)}, "not in this vector"),
    "unknown mode": ({"mode": "sideways"}, "unknown steering mode"),
    "unknown steer_at": ({"steer_at": "middle"}, "unknown steer_at"),
}


@pytest.mark.parametrize("case", list(BAD_STEERING))
def test_absurd_steering_parameters(case: str) -> None:
    overrides, message = BAD_STEERING[case]
    with pytest.raises(ValueError, match=message):
        Steering(_vector(), **overrides)


BAD_STAGE2: dict[str, tuple[dict, str]] = {
    "K = 0": ({"samples_per_prompt": 0}, "at least 2"),
    "K = 1": ({"samples_per_prompt": 1}, "at least 2"),
    "0 steps": ({"steps": 0}, "steps must be at least 1"),
    "temperature 0": ({"temperature": 0.0}, "temperature must be positive"),
    "learning rate 0": ({"learning_rate": 0.0}, "learning rate"),
    "unknown objective": ({"objective": "ppo"}, "objective must be"),
    "0 prompts per step": ({"prompts_per_step": 0}, "prompts per step"),
}


@pytest.mark.parametrize("case", list(BAD_STAGE2))
def test_absurd_stage2_settings(case: str) -> None:
    overrides, message = BAD_STAGE2[case]
    with pytest.raises(ValueError, match=message):
        Stage2Config(**overrides)


@pytest.mark.parametrize("kwargs, message", [({"max_new_tokens": 0}, "between 1 and 1024"),
                                             ({"max_new_tokens": 10**6}, "between 1 and 1024"),
                                             ({"batch_size": 0}, "batch size")])
def test_absurd_generation_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tiny("llava"), [(None, "hi")], **kwargs)


def test_evaluation_settings_and_layer_text() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        evaluate(tiny("llava"), [Record("p", "benign")], None, ToxicityScorer.fallback(),
                 config=EvalConfig(batch_size=0))
    with pytest.raises(ValueError, match="empty"):
        evaluate(tiny("llava"), [], None, ToxicityScorer.fallback())
    with pytest.raises(ValueError, match="comma-separated whole numbers"):
        parse_layers("1.5,2")


# --- vectors -----------------------------------------------------------------------------------------
def _save_raw(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


class _Boom:
    def __reduce__(self):  # unpickling would create a marker file
        return (Path.touch, (Path(MARKER),))


MARKER = "/tmp/workbench-unpickled-marker"


BAD_VECTORS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "NaN direction": (lambda d: _save_raw(d / "v.safetensors", {"direction.0": torch.tensor([float("nan"), 1.0])}),
                      "NaN or Inf"),
    "Inf calibration": (lambda d: _save_raw(d / "v.safetensors", {"direction.0": torch.ones(2),
                                                                  "calibration.0": torch.tensor([float("inf"), 0.0])}),
                        "NaN or Inf"),
    "NaN strength": (lambda d: _save_raw(d / "v.safetensors", {"direction.0": torch.ones(2),
                                                               "scale.0": torch.tensor([float("nan")])}), "strength"),
    "no tensors": (lambda d: _save_raw(d / "v.safetensors", {"other": torch.ones(1)[:0].reshape(0)}),
                   "unexpected tensor"),
    "no tensors at all": (lambda d: _save_raw(d / "v.safetensors", {}), "needs at least one layer"),
    "wrong tensor names": (lambda d: _save_raw(d / "v.safetensors", {"weights": torch.ones(2)}), "unexpected tensor"),
    "mixed hidden sizes": (lambda d: _save_raw(d / "v.safetensors", {"direction.0": torch.ones(2),
                                                                     "direction.1": torch.ones(3)}), "one hidden size"),
    "pickle renamed .safetensors": (lambda d: _write(d / "v.safetensors", pickle.dumps(_Boom())),
                                    "not a safetensors file"),
    "torch .pt pickle": (lambda d: _torch_pickle(d / "v.pt"), "not a safetensors file"),
    "truncated safetensors": (lambda d: _write(d / "v.safetensors", (_save_raw(
        d / "full.safetensors", {"direction.0": torch.ones(64)}).read_bytes())[:40]), "not a safetensors file"),
    "empty file": (lambda d: _write(d / "v.safetensors", b""), "not a safetensors file"),
    "missing file": (lambda d: d / "absent.safetensors", "does not exist"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _torch_pickle(path: Path) -> Path:
    torch.save({"direction.0": torch.ones(2), "boom": _Boom()}, path)
    return path


@pytest.mark.parametrize("case", list(BAD_VECTORS))
def test_bad_vector_files_are_refused_without_unpickling(tmp_path: Path, case: str) -> None:
    Path(MARKER).unlink(missing_ok=True)
    make, message = BAD_VECTORS[case]
    with pytest.raises(VectorFileError, match=message):
        SteeringVector.load(make(tmp_path))
    assert not Path(MARKER).exists()


def test_vectors_of_the_wrong_model(tmp_path: Path) -> None:
    vlm = tiny("llava")
    small = SteeringVector({0: torch.ones(vlm.hidden_size + 1)})
    with pytest.raises(VectorError, match="does not match the model's hidden size"):
        small.check_compatible(vlm)
    other = SteeringVector({0: torch.ones(vlm.hidden_size)}, metadata={"num_layers": vlm.num_layers + 5})
    with pytest.raises(VectorError, match="made for a model with"):
        other.check_compatible(vlm)


# --- names and paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../runs", "stage1-../../etc", "/etc/passwd", "stage1-20260101-000000-ab12/../x",
                                  "eval-20260101-000000-ABCD", ""])
def test_run_names_cannot_leave_the_runs_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a run id"):
        RunStore(tmp_path).path(name)


def test_upload_labels_cannot_leave_the_uploads(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not an upload"):
        Workbench("tiny-random:llava", tmp_path).records("uploads/../../../etc/passwd")


# --- the CLI -----------------------------------------------------------------------------------------
@pytest.fixture
def small_set(tmp_path: Path) -> Path:
    path = tmp_path / "set.jsonl"
    rows = [{"prompt": f"harm {i}", "label": "harmful"} for i in range(3)] + \
        [{"prompt": f"fine {i}", "label": "benign"} for i in range(3)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_cli_bad_inputs_exit_2_with_a_message(tmp_path: Path, small_set: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    model = ["--model", "tiny-random:llava"]
    assert main(["stage1", *model, "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    fake = _write(tmp_path / "v.safetensors", pickle.dumps(_Boom()))
    assert main(["steer", *model, "--vectors", str(fake), "--prompt", "hi"]) == 2
    assert "not a safetensors file" in capsys.readouterr().err
    assert main(["stage1", *model, "--data", str(small_set), "--out", str(tmp_path / "s1")]) == 0
    vectors = str(tmp_path / "s1" / "vectors.safetensors")
    assert main(["steer", *model, "--vectors", vectors, "--prompt", "hi", "--alpha", "1e9"]) == 2
    assert "between -1000 and 1000" in capsys.readouterr().err
    assert main(["steer", *model, "--vectors", vectors, "--prompt", "hi", "--layers", "7"]) == 2
    assert "not in this vector" in capsys.readouterr().err
    assert main(["stage2", *model, "--vectors", vectors, "--data", str(small_set), "--out", str(tmp_path / "s2"),
                 "--samples", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["notebook", "--run", str(tmp_path / "s1"), "--out", str(tmp_path / "x.txt")]) == 2
    assert ".ipynb" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["steer", *model, "--vectors", vectors, "--prompt", "hi", "--layers", "one"])
    assert "comma-separated layer numbers" in capsys.readouterr().err


def test_an_unreachable_hub_id_fails_in_seconds_with_what_to_do(monkeypatch) -> None:
    """Offline, the hub client retried each file for about 2.5 minutes; a one-connection probe answers at once."""
    import socket
    import time

    from workbench.core.models import load_vlm

    def unreachable(*args, **kwargs):
        raise socket.gaierror("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="hub .* cannot be reached .* give a local folder"):
        load_vlm("someone/no-such-model")
    assert time.monotonic() - start < 5
