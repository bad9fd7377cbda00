"""The app's backend: one loaded model, the runs folder, and plain functions the tabs call.

Nothing here imports Gradio: every function takes plain values, raises `ValueError` (or
`DatasetError`) with a message that says what to fix, and writes results into a new run folder,
so a failed request never loses or overwrites what is already there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image

from ..core.models import VLM, load_vlm
from ..core.records import DatasetError, Record, open_image
from ..core.runs import RunStore, run_kind
from ..data.sources import dataset_choices, load_dataset, source_of
from ..evaluate.alpha import run_stage1_preset_job
from ..evaluate.answers import describe_organism_answer
from ..evaluate.job import SteeringChoice
from ..evaluate.judges import choose_judge
from ..rewards.responses import score_responses
from ..rewards.scorers import ScorerSpec, load_scorers
from ..rewards.toxicity import ToxicityScorer
from ..rewards.visual import ClipScorer
from ..stage1.job import Stage1Spec
from ..stage1.pipeline import Stage1Result, load_stage1
from ..steer.rules import get_rule
from ..steer.steering import RECORDED, Steering, generate, generate_ids, parse_layers, steering_for
from ..steer.token_view import answer_diff, token_view
from ..steer.vectors import SteeringVector
from .hosting import (
    DUAL_USE_REFUSED,
    MAX_PROMPT_CHARS,
    SERVER_PATH_REFUSED,
    HostPolicy,
)
from .policy import harm_push
from .storage import VISITORS, stage_upload, trim_visitor_folders, visitors_full

T = TypeVar("T")
STAGE1_CACHE = 4  # reopened Stage I runs kept in memory (activations can be large)


def using_model(function: Callable[..., T]) -> Callable[..., T]:
    """Run a job (a Workbench method, or a function whose first argument is a Workbench) with the model held, so
    its model name, weights and results all belong to one model."""
    @functools.wraps(function)
    def wrapper(wb: Workbench, *args: Any, **kwargs: Any) -> T:
        with wb.shared.in_use():
            return function(wb, *args, **kwargs)
    return wrapper


def user_message(error: BaseException) -> str:
    """The error's message with server paths reduced to file names (never show the server's folders); URLs
    are left whole."""
    return re.sub(r"(?<![\w:/.~])(?:[A-Za-z]:)?(?:/[^/\s:'\"]+)+/([^/\s:'\"]+)", r"\1", str(error))


class SharedModel:
    """What every visitor shares: the one model (loaded on first use, one lock), its scorers, the host's policy
    and a small cache of reopened Stage I runs (keyed by folder, so visitors' runs never mix)."""

    def __init__(self, model_spec: str, policy: HostPolicy | None = None) -> None:
        self.spec = model_spec
        self.policy = policy or HostPolicy(hosted=False, allow_server_paths=True, allow_dual_use=True)
        self._vlm: VLM | None = None
        self.lock = threading.Lock()
        self._scorers: tuple[ToxicityScorer, ClipScorer | None] | None = None
        self.clip_note: str | None = None  # why there is no CLIP, when there is none
        self.stage1_cache: OrderedDict[Path, Stage1Result] = OrderedDict()
        self._jobs = 0  # jobs using the model now: a model switch waits for none
        self._reference: SteeringVector | None = None
        self._jobs_guard = threading.Lock()

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Held by every job for its whole length, so a model switch can never happen half-way through one."""
        with self._jobs_guard:
            self._jobs += 1
        try:
            yield
        finally:
            with self._jobs_guard:
                self._jobs -= 1

    def _refuse_switch_while_busy(self) -> None:
        if self._jobs:
            raise ValueError(f"a job is running on {self.spec!r}; wait for it to finish (or cancel it) before loading "
                             "another model")

    @property
    def vlm(self) -> VLM:
        with self.lock:
            if self._vlm is None:
                self._vlm = load_vlm(self.spec)
            return self._vlm

    def scorers(self) -> tuple[ToxicityScorer, ClipScorer | None]:
        """Toxicity (Detoxify, else the named fallback) and open_clip (the organism's own, else ViT-B-32)."""
        with self.lock:
            if self._scorers is None:  # without CLIP (offline) visual consistency is shown as unavailable
                toxicity, clip, self.clip_note = load_scorers(ScorerSpec.for_model(self.spec))
                self._scorers = (toxicity, clip)
            return self._scorers

    def switch_model(self, spec: str) -> None:
        """Load another model (organism, tiny-random:<arch>, a folder or a hub id) in place of this one."""
        if not self.policy.allow_model_switch:
            raise ValueError("this app is hosted: its model is fixed by the host (every visitor shares it); run "
                             "the workbench locally to load another model")
        spec = (spec or "").strip()
        if not spec:
            raise ValueError("type a model: organism, tiny-random:llava, a local folder or a Hugging Face id")
        self._refuse_switch_while_busy()
        try:
            vlm = load_vlm(spec)  # fails before anything is replaced: the current model stays loaded
        except Exception as error:  # noqa: BLE001 - offline hub, bad folder, unknown architecture
            raise ValueError(f"could not load {spec!r} ({type(error).__name__}: {str(error)[:200]}); the current "
                             f"model {self.spec!r} stays loaded") from None
        with self._jobs_guard, self.lock:
            self._refuse_switch_while_busy()  # a job may have started while the new model loaded
            self._vlm, self.spec, self._scorers = vlm, spec, None
            self.stage1_cache.clear()

    def device_summary(self) -> str:
        vlm = self.vlm
        return f"{vlm.spec} on {vlm.input_device} ({str(vlm.dtype).replace('torch.', '')}), {vlm.num_layers} layers"

    def check_dual_use(self, mode: str | None = None, alpha: float | None = None,
                       vector: SteeringVector | None = None, layers: Sequence[int] | None = None) -> None:
        """In hosting mode, attacks (steering toward harm; with no mode, making jailbreak images) are for the
        model organism only, unless the host allows them. With the vector, the steering's effect decides
        (`policy.harm_push`: each summand's scale and, given the host's reference, its orientation); without it,
        the sign of α."""
        if self.policy.allow_dual_use or self.spec == "organism":
            return
        if mode is None:
            raise ValueError(DUAL_USE_REFUSED)
        if vector is not None and alpha is not None:
            if harm_push(vector, mode, float(alpha), layers, self.reference()) is not None:
                raise ValueError(DUAL_USE_REFUSED)
            return
        rule = get_rule(mode)
        if alpha is not None and rule.toward_harm is not None and rule.toward_harm(alpha):
            raise ValueError(DUAL_USE_REFUSED)

    def reference(self) -> SteeringVector | None:
        """The host's reference vectors (loaded once), or None when the host gave none."""
        if self.policy.reference_vectors is None:
            return None
        with self.lock:
            if self._reference is None:
                self._reference = SteeringVector.load(self.policy.reference_vectors)
            return self._reference


class Workbench:
    """One visitor's view: the shared model and scorers, and the runs folder this visitor reads and writes (in
    hosting mode a folder of their own, see `for_visitor`)."""

    def __init__(self, model: str | SharedModel, runs_dir: str | Path, policy: HostPolicy | None = None) -> None:
        self.shared = model if isinstance(model, SharedModel) else SharedModel(model, policy)
        self.runs = RunStore(runs_dir)

    @property
    def spec(self) -> str:
        return self.shared.spec

    @property
    def policy(self) -> HostPolicy:
        return self.shared.policy

    @property
    def vlm(self) -> VLM:
        return self.shared.vlm

    def scorers(self) -> tuple[ToxicityScorer, ClipScorer | None]:
        return self.shared.scorers()

    def switch_model(self, spec: str) -> None:
        self.shared.switch_model(spec)

    def check_dual_use(self, mode: str | None = None, alpha: float | None = None,
                       vector: SteeringVector | None = None, layers: Sequence[int] | None = None) -> None:
        self.shared.check_dual_use(mode, alpha, vector, layers)

    def for_visitor(self, visitor: str | None) -> Workbench:
        """The workbench as `visitor` (a browser session) sees it. Trusted local use: this one, every run. Hosting
        mode: runs and uploads in `visitors/<hash of the session>/`, which no other visitor can list or open;
        folders idle for a day, or the oldest beyond the disk quota, are removed when a new visitor arrives."""
        if not self.policy.hosted:
            return self
        if not visitor:
            raise ValueError("this hosted app needs a browser session to keep your runs apart from others'")
        folder = self.runs.root / VISITORS / hashlib.sha256(visitor.encode()).hexdigest()[:24]
        if not folder.is_dir():
            trim_visitor_folders(self.runs.root / VISITORS)
        return Workbench(self.shared, folder)

    # --- data --------------------------------------------------------------------------------------
    def dataset(self, choice: str, upload: str | None = None, images_zip: str | None = None
                ) -> tuple[list[Record], str]:
        """(records, label): the uploaded file (with its images zip) when given, else a built-in set or a
        benchmark name. The label reopens the same records later (`records(label)`), e.g. to resume."""
        if upload:
            if self.policy.hosted and visitors_full(self.runs.root.parent):
                raise DatasetError("the server's disk space for visitors is full right now; try again later or use a "
                                   "listed dataset")
            staged = stage_upload(self.runs.root, upload, images_zip)
            try:
                records = load_dataset(staged, confine=True)
            except DatasetError as error:  # messages name the visitor's file, not the staged copy
                shutil.rmtree(staged.parent, ignore_errors=True)  # a rejected upload leaves nothing behind
                raise DatasetError(str(error).replace(staged.name, Path(upload).name)) from None
            except BaseException:
                shutil.rmtree(staged.parent, ignore_errors=True)
                raise
            return records, staged.relative_to(self.runs.root).as_posix()
        if not choice:
            raise DatasetError("choose a dataset or upload a .jsonl/.csv file")
        source = source_of(choice)
        if source is not None and source.only_for_model not in (None, self.spec):
            raise DatasetError(f"{source.prefix} datasets only make sense with the {source.only_for_model} model; "
                               "choose 'demo' or upload a dataset")
        return self.records(choice), choice

    def records(self, label: str) -> list[Record]:
        """Records for a label from `dataset()`: demo, a built-in or benchmark name, or a staged upload. Server
        paths only when the host allows them (never in hosting mode unless --allow-server-paths)."""
        label = str(label or "")
        if label.startswith("uploads/"):
            path = (self.runs.root / label).resolve()
            if self.runs.root / "uploads" not in path.parents or not path.is_file():
                raise DatasetError(f"{label!r} is not an upload of this app")
            return load_dataset(path, confine=True)
        if label.startswith("attack-") and label.endswith("/dataset.jsonl"):  # an attack run of this visitor's
            return load_dataset(self.runs.path(label.removesuffix("/dataset.jsonl")) / "dataset.jsonl", confine=True)
        if not self.policy.allow_server_paths and label not in dataset_choices(self.spec):
            raise DatasetError(SERVER_PATH_REFUSED)  # the same words whether or not such a path exists
        return load_dataset(label)

    # --- Stage I -----------------------------------------------------------------------------------
    @using_model
    def run_stage1(self, records: Sequence[Record], data_label: str, position: str, method: str,
                   progress: Any = None, cancel: threading.Event | None = None, preset: str = "workbench") -> str:
        """The Stage I job (as its preset makes it) in a new run; returns its id. The run is listed once it is
        whole: one that fails or is cancelled leaves nothing (its activations are written only at the end)."""
        spec = Stage1Spec(self.spec, data_label, position, method, preset=preset)
        run_id, folder = self.runs.create("stage1", {"model": self.spec, "data": data_label}, staged=True)
        try:
            result, _ = run_stage1_preset_job(spec, folder, self.vlm, records, choose_judge("auto", data_label),
                                              progress, cancel, show_bar=False)
        except BaseException:
            self.runs.discard(run_id)
            raise
        self._remember(self.runs.publish(run_id), result)
        return run_id

    def stage1(self, run_id: str) -> Stage1Result:
        """A Stage I run, reopened from disk once and cached."""
        folder = self.runs.path(run_id)
        cache = self.shared.stage1_cache
        if folder not in cache:
            self._remember(folder, load_stage1(folder))
        cache.move_to_end(folder)
        return cache[folder]

    def _remember(self, folder: Path, result: Stage1Result) -> None:
        cache = self.shared.stage1_cache
        cache[folder] = result
        while len(cache) > STAGE1_CACHE:
            cache.popitem(last=False)

    def vector(self, run_id: str) -> SteeringVector:
        """The vectors of a Stage I or Stage II run."""
        path = self.runs.path(run_id) / "vectors.safetensors"
        if run_kind(run_id) == "eval":
            raise ValueError(f"run {run_id} is an evaluation: it has metrics and generations, not vectors; pick the "
                             "Stage I or Stage II run it evaluated")
        if not path.is_file():
            raise ValueError(f"run {run_id} has no vectors yet (a Stage II run writes them when it finishes; "
                             "resume it or pick a finished run)")
        vector = SteeringVector.load(path)
        vector.check_compatible(self.vlm)
        return vector

    # --- steering ----------------------------------------------------------------------------------
    def recorded_steering(self, run_id: str) -> dict[str, Any]:
        """The settings a run's vectors were made to be applied with (Stage II records its training settings);
        empty when they record none (Stage I)."""
        return dict(self.vector(run_id).metadata.get(RECORDED) or {})

    def saved_setting(self, run_id: str) -> dict[str, Any]:
        """What a run says to steer with, read from its small files (no tensors, no model): a Stage II run's
        trained mode, α and layers (config.json); a Stage I run's suggested layers (run.json)."""
        folder = self.runs.path(run_id)
        if run_kind(run_id) == "stage2" and (folder / "config.json").is_file():
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            return {key: config[key] for key in ("mode", "alpha", "layers") if key in config}
        layers = self.runs.info(run_id).get("suggested_layers")
        return {"layers": layers} if layers else {}

    def steering(self, run_or_vector: str | SteeringVector, mode: str, alpha: float, layers: str | None) -> Steering:
        """The widgets' mode, α and layers on a run's vectors (or vectors already loaded); layers left empty and the
        steered positions come from the vector (what Stage II trained with or a Stage I preset recorded, else Stage
        I's suggested layers), as the CLI does. Checked against the dual-use policy."""
        vector = self.vector(run_or_vector) if isinstance(run_or_vector, str) else run_or_vector
        steering = steering_for(vector, mode, float(alpha), parse_layers(layers))[0]
        self.check_dual_use(steering.mode, steering.alpha, steering.vector, steering.active_layers)
        return steering

    def steering_choice(self, run_id: str, mode: str, alpha: float, layers: str | None) -> SteeringChoice:
        """What the visitor chose, for a job spec (layers left empty and the positions stay the vector's to say, as
        on the CLI), after the same checks as `steering`."""
        self.steering(run_id, mode, alpha, layers)
        return SteeringChoice(mode, float(alpha), parse_layers(layers), None)

    @using_model
    def compare(self, steering: Steering, image: str | Path | Image.Image | None, prompt: str, max_new_tokens: int
                ) -> dict[str, Any]:
        """Unsteered and steered outputs (same decoding, as `steering.compare`) with their toxicity, refusal and
        visual consistency, where they differ word by word, and the token view of the steered answer."""
        _check_prompt(prompt)
        image = open_image(image)
        item = (image, prompt)
        with self.vlm.lock:  # one turn for the whole comparison (FIFO, re-entrant): a visitor waits for at most the
            # trace running when they asked, not for one of another job's traces between each of their own
            plain, steered = (generate_ids(self.vlm, [item], how, int(max_new_tokens))[0] for how in (None, steering))
            view = token_view(self.vlm, item, steering, steered) if steered else None
        unsteered_text, steered_text = self.vlm.decode([plain, steered])
        scores = self._scores(image, [unsteered_text, steered_text])
        return {"unsteered": unsteered_text, "steered": steered_text, "view": view,
                "diff": answer_diff(unsteered_text, steered_text), **scores}

    def _scores(self, image: Image.Image | None, texts: list[str]) -> dict[str, Any]:
        """Toxicity, keyword refusal and visual consistency per text, and on the organism what each answer is
        (`answers`: a refusal, which activity's steps, ... by the world's ground truth; None elsewhere)."""
        toxicity, clip = self.scorers()
        scores = score_responses(texts, [image] * len(texts), toxicity, clip)
        measured = clip is not None and image is not None
        answers = [describe_organism_answer(t) for t in texts] if self.spec == "organism" else None
        return {"toxicity": scores.toxicity, "refused": scores.refused, "toxicity_scorer": toxicity.name,
                "visual": scores.visual if measured else None, "answers": answers}

    @using_model
    def sweep(self, run_id: str, image: str | Path | Image.Image | None, prompt: str, mode: str, layers: str | None,
              alphas: Sequence[float], max_new_tokens: int, progress: Any = None) -> list[dict[str, Any]]:
        """One steered generation per strength, each steered as `compare` steers (layers left empty: the run's
        recorded or suggested ones): toxicity, refusal and visual consistency against α."""
        _check_prompt(prompt)
        if not alphas or len(alphas) > 25:
            raise ValueError("give between 1 and 25 strengths")
        image = open_image(image)
        vector = self.vector(run_id)  # read once for every strength
        rows = []
        for index, alpha in enumerate(alphas):
            if progress is not None:
                progress(index, len(alphas), f"α = {alpha:g}")
            steering = self.steering(vector, mode, float(alpha), layers)  # empty layers: the run's, as in compare
            text = generate(self.vlm, [(image, prompt)], steering, max_new_tokens=int(max_new_tokens))[0]
            scores = self._scores(image, [text])
            rows.append({"alpha": float(alpha), "layers": list(steering.active_layers), "output": text,
                         "toxicity": scores["toxicity"][0],
                         "refusal": float(scores["refused"][0]),
                         "visual_consistency": scores["visual"][0] if scores["visual"] else None,
                         "answer": scores["answers"][0] if scores["answers"] else None})
        return rows


def _check_prompt(prompt: str | None) -> None:
    if not prompt or not prompt.strip():
        raise ValueError("type a prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt is {len(prompt):,} characters; keep it under {MAX_PROMPT_CHARS:,} (the model "
                         "is shared)")
