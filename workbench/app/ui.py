"""`create_app()`: the Blocks, one module per tab, wired to the backend.

Tabs are built first (each registers its components in `AppContext.ui`), then wired, so a tab's
event can update another tab's components (e.g. a finished Stage I run appears in every run picker).
Theme and CSS live here; what tabs share lives in context.py.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from .backend import Workbench
from .context import RUN_PICKERS, AppContext
from .hosting import HostPolicy
from .streams import STREAMS
from .tabs import attacks, data, evaluate, export, playground, stage1, stage2

THEME = gr.themes.Soft(primary_hue="teal", neutral_hue="slate")
CSS = """
.output-pair textarea { font-family: ui-monospace, monospace; }
#title { margin-bottom: 0; }
.attack-image img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
"""
REDRAW_FIGURES = "() => { setTimeout(() => window.dispatchEvent(new Event('resize')), 100); }"
TABS = (data, attacks, stage1, playground, stage2, evaluate, export)


def create_app(model_spec: str, runs_dir: str | Path = "runs", policy: HostPolicy | None = None,
               preload_scorers: bool = False) -> gr.Blocks:
    """The workbench UI for `model_spec` (loaded on first use), with runs kept in `runs_dir`; `policy` says what
    visitors may do (default: trusted local use). `preload_scorers` (hosting): the toxicity and CLIP scorers load
    now, so no request ever waits for them or reaches out for weights, and the log says which ones run."""
    ctx = AppContext(Workbench(model_spec, runs_dir, policy))
    if preload_scorers:
        toxicity, clip = ctx.shared.scorers()
        print(f"workbench: scorers loaded at start: toxicity {toxicity.name}"
              + (f" ({toxicity.note})" if toxicity.note else "")
              + f"; visual consistency {clip.name if clip else f'not measured ({ctx.shared.clip_note})'}",
              flush=True)

    def fill_pickers(request: gr.Request) -> list:
        """A new page: pickers show the newest runs, and the steering boxes what the playground's run says (a
        Stage I run's suggested layers, a Stage II run's trained setting), not empty boxes that mean "all"."""
        updates = ctx.refresh_pickers(request, initial=True)
        shown = dict(zip((name for name, _ in RUN_PICKERS), updates))["play_run"].get("value")
        try:
            setting = ctx.visitor(request).saved_setting(shown) if shown else {}
        except (ValueError, OSError):
            setting = {}
        layers = setting.get("layers")
        boxes = [gr.update(value=",".join(map(str, layers))) if layers else gr.update() for _ in range(3)]  # one
        # dict each: Gradio consumes an update dict as it applies it
        knobs = [gr.update(value=setting[key]) if key in setting else gr.update()
                 for _ in ("play", "eval") for key in ("mode", "alpha")]
        return [*updates, *boxes, *knobs]

    def visitor_left(request: gr.Request) -> None:
        ctx.stop_session(request)

    STREAMS.on_last_close(ctx.stop_session)  # a raw client that stops listening stops its jobs too

    # delete_cache: Gradio's cached uploads and downloads older than an hour are removed every hour
    with gr.Blocks(title="VLM steering workbench", delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# VLM steering workbench\nModel **`{model_spec}`** · SPO-VLM two-stage defence: Stage I "
                    "finds where harmful and benign separate and steers against it; Stage II refines the "
                    "steering by preference optimisation with the model frozen.", elem_id="title")
        with gr.Tabs() as ctx.ui["tabs"]:
            for tab in TABS:
                tab.build(ctx)
        for tab in TABS:
            tab.wire(ctx)
        # Figures in a hidden tab cannot follow a window resize; a tab shown again redraws them at its width
        ctx.ui["tabs"].select(None, js=REDRAW_FIGURES, api_visibility="private", queue=False)
        steering_boxes = [ctx.ui[name] for name in ("play_layers", "eval_layers", "s2_layers", "play_mode",
                                                    "play_alpha", "eval_mode", "eval_alpha")]
        app.load(fill_pickers, None, [*ctx.pickers(), *steering_boxes], api_visibility="private")
        app.unload(visitor_left)  # a visitor who leaves stops their jobs (each at its next step)
    return app
