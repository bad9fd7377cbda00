"""The playground's token view as a figure: where the steering acted and what it changed, token by token.

Image patches share one narrow labelled band (a LLaVA image is 576 tokens; the prompt and answer are what a
reader reads), token labels are thinned when there are too many to print, and the panels go from what the
steering did (which positions, how hard relative to the state's size, how each answer token's probability moved)
to why (the projection on v̂ and, for the adaptive rule, its gate).
"""

from __future__ import annotations

import math
from typing import Any

import plotly.graph_objects as go

from .plots import plotly_text, style

IMAGE_BAND = 10.0  # the whole image's width on the token axis, in token widths
MAX_LABELS = 60  # above this many text tokens, every k-th is labelled (all are on hover)
ROW_PX, TITLE_PX, MARGIN_PX = 30, 48, 230  # a layer's row, a panel's title and gap, title + tick labels + axis title
PANELS = {"steered": "steered here (1 = the steering acted at this position)",
          "relative_push": "push along v̂ relative to the state, (steered h − h) · v̂ / ‖h‖",
          "logprob_change": "answer token: log p steered − log p unsteered (same tokens)",
          "gate": "adaptive gate c = clamp(cos(h − h̄, v), 0, 1)",
          "projection": "projection h · v̂ (before steering)"}


def token_positions(segments: list[str]) -> list[float]:
    """x of each token: text tokens one unit apart, the image's patches squeezed into one band of IMAGE_BAND."""
    patches = segments.count("image")
    step = min(1.0, IMAGE_BAND / patches) if patches else 1.0
    x, out = 0.0, []
    for i, segment in enumerate(segments):
        if i:
            x += step if segment == "image" and segments[i - 1] == "image" else 1.0
        out.append(x)
    return out


def _ticks(view: Any, x: list[float]) -> tuple[list[float], list[str]]:
    """One tick per image band (labelled with its patch count) and the text tokens, thinned to MAX_LABELS."""
    values, labels = [], []
    text = [i for i, s in enumerate(view.segments) if s != "image"]
    every = max(1, math.ceil(len(text) / MAX_LABELS))
    shown = set(text[::every])
    i = 0
    while i < len(view.segments):
        if view.segments[i] == "image":
            j = i
            while j + 1 < len(view.segments) and view.segments[j + 1] == "image":
                j += 1
            values.append((x[i] + x[j]) / 2)
            labels.append(f"[image: {j - i + 1} patches]")
            i = j + 1
            continue
        if i in shown:
            values.append(x[i])
            labels.append(plotly_text(view.tokens[i].strip() or "␣"))
        i += 1
    return values, labels


def _panels(view: Any) -> list[tuple[str, list[list[float | None]], list[str], dict]]:
    """(panel, z rows, row names, colour settings) in reading order."""
    layers = [f"L{layer}" for layer in view.layers]
    push = view.relative_push
    bound = float(push.abs().max()) or 1.0
    panels = [("steered", [[1.0 if s else 0.0 for s in view.steered]], ["steered"],
               dict(colorscale=[[0, "#f4f4f4"], [1, "#333"]], zmin=0, zmax=1, showscale=False)),
              ("relative_push", push.tolist(), layers, dict(colorscale="RdBu", zmin=-bound, zmax=bound))]
    if any(v is not None for v in view.logprob_change):
        change = [v for v in view.logprob_change if v is not None]
        top = max(abs(v) for v in change) or 1.0
        panels.append(("logprob_change", [view.logprob_change], ["Δ log p"],
                       dict(colorscale="PiYG", zmin=-top, zmax=top)))
    if view.gate is not None:
        panels.append(("gate", view.gate.tolist(), layers, dict(colorscale="Viridis", zmin=0, zmax=1)))
    panels.append(("projection", view.projection.tolist(), layers, dict(colorscale="RdBu", zmid=0)))
    return panels


def token_figure(view: Any, title: str) -> go.Figure:
    """Tokens × steered layers of a `token_view.TokenView`, one heatmap per panel (see PANELS), each cell's token,
    segment and value on hover, the image band shaded and the answer boxed."""
    from plotly.subplots import make_subplots

    panels = _panels(view)
    rows_px = [max(56 if colours.get('showscale', True) else 34, ROW_PX * len(names))  # a colour bar needs room
               for _, _, names, colours in panels]
    plot_px = sum(rows_px) + TITLE_PX * (len(panels) - 1)
    figure = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=TITLE_PX / plot_px,
                           row_heights=[r / sum(rows_px) for r in rows_px],
                           subplot_titles=[PANELS[name] for name, _, _, _ in panels])
    x = token_positions(view.segments)
    hover = [f"{i}: {plotly_text(repr(text))} ({segment}{', steered' if steered else ''})"
             for i, (text, segment, steered) in enumerate(zip(view.tokens, view.segments, view.steered))]
    top = 1.0
    for row, (_, z, names, colours) in enumerate(panels, start=1):
        share = rows_px[row - 1] / plot_px
        bar = dict(len=share, y=top, yanchor="top", thickness=12, tickfont=dict(size=10), nticks=4)
        figure.add_heatmap(z=z, x=x, y=names, customdata=[hover] * len(names), row=row, col=1, colorbar=bar,
                           hovertemplate="%{customdata}<br>%{y}: %{z:.3f}<extra></extra>", hoverongaps=False,
                           **colours)
        top -= share + TITLE_PX / plot_px
    images = [x[i] for i, s in enumerate(view.segments) if s == "image"]
    if images:
        figure.add_vrect(x0=min(images) - 0.5, x1=max(images) + 0.5, fillcolor="rgba(120,120,120,0.12)",
                         line_width=0, row="all", col=1)
    answer = [x[i] for i, segment in enumerate(view.segments) if segment == "answer"]
    if answer:
        figure.add_vrect(x0=answer[0] - 0.5, x1=answer[-1] + 0.5, line=dict(color="#222", width=2),
                         fillcolor="rgba(0,0,0,0)", row="all", col=1)
    values, labels = _ticks(view, x)
    figure.update_xaxes(tickvals=values, ticktext=labels, tickangle=-90, tickfont=dict(size=11),
                        row=len(panels), col=1)
    figure.update_xaxes(title_text="token (image shaded, the steered answer boxed; hover a cell for its token)",
                        row=len(panels), col=1)
    return style(figure, title, height=plot_px + MARGIN_PX)
