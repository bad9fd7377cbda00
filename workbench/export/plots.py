"""Every figure of the workbench in one publication style, and their PNG/SVG export through kaleido.

One style: the same font, sizes, margins and colours (harmful red, benign blue, a fixed palette per
source) everywhere, titles that name the layer and method. Export keeps one headless browser alive
for a batch (about 0.2 s a figure after a 3 s start).
"""

from __future__ import annotations

import atexit
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from ..rewards.combined import reward_metrics

FONT = "Helvetica, Arial, sans-serif"
WIDTH, HEIGHT = 900, 520  # pixels at scale 1; exported at scale 2 (1800 x 1040 PNG)
LABEL_COLOURS = {"harmful": "#c0392b", "benign": "#2c6fbb"}
CONDITION_COLOURS = {"unsteered": "#7f7f7f", "steered": "#2a9d8f"}
PALETTE = ("#2c6fbb", "#c0392b", "#2a9d8f", "#e9a03b", "#8e5ea2", "#6b8e23", "#d35400", "#34495e")
MARKERS = ("circle", "diamond", "square", "triangle-up", "x", "star", "cross", "pentagon")


def style(figure: go.Figure, title: str, x_title: str | None = None, y_title: str | None = None,
          height: int = HEIGHT, legend_below: bool = False) -> go.Figure:
    """Apply the workbench style in place and return the figure; `legend_below` for figures shown in half a page,
    where a legend at the side would squeeze the plot."""
    figure.update_layout(
        title=dict(text=title, x=0.02, xanchor="left", font=dict(size=18)), template="simple_white",
        font=dict(family=FONT, size=14, color="#222"), width=None, height=height,
        margin=dict(l=70, r=30, t=70, b=60), legend=dict(orientation="v", yanchor="top", y=1.0, x=1.02,
                                                         xanchor="left", bgcolor="rgba(0,0,0,0)"))
    if legend_below:
        figure.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, xanchor="left"),
                             height=height + 60, margin=dict(b=40))
    if x_title is not None:
        figure.update_xaxes(title_text=x_title, showgrid=True, gridcolor="#eee")
    if y_title is not None:
        figure.update_yaxes(title_text=y_title, showgrid=True, gridcolor="#eee")
    return figure


def layer_scores_figure(scores: Sequence, method: str = "mean_diff") -> go.Figure:
    """Held-out probe accuracy and projection AUROC per layer (LayerScore rows), with the family-wise null."""
    layers = [s.layer for s in scores]
    figure = go.Figure()
    figure.add_scatter(x=layers, y=[s.probe_accuracy for s in scores], mode="lines+markers",
                       name="probe accuracy (cross-validated)", line=dict(color=PALETTE[0], width=3))
    figure.add_scatter(x=layers, y=[s.auroc for s in scores], mode="lines+markers",
                       name="AUROC of projection (held out)", line=dict(color=PALETTE[2], width=3, dash="dash"))
    baseline = getattr(scores[0], "probe_baseline", float("nan")) if scores else float("nan")
    if np.isfinite(baseline):
        figure.add_scatter(x=[min(layers), max(layers)], y=[baseline, baseline], mode="lines",
                           name="probe baseline: always the majority class", line=dict(color=PALETTE[0], width=1,
                                                                                          dash="dot"))
    null = getattr(scores[0], "auroc_null", float("nan")) if scores else float("nan")
    if np.isfinite(null):
        figure.add_scatter(x=[min(layers), max(layers)], y=[null, null], mode="lines",
                           name=f"null: 95% of the best of {len(layers)} layers, shuffled labels",
                           line=dict(color=PALETTE[1], width=2, dash="dot"))
    figure.update_yaxes(range=[0, 1.05])
    figure.update_xaxes(dtick=1)
    return style(figure, f"Harmful vs benign separation by layer ({method})", "layer", "score", legend_below=True)


def similarity_figure(similarity: torch.Tensor, sources: Sequence[str], layer: int) -> go.Figure:
    """Cosine similarity of per-source directions at one layer, as an annotated heatmap."""
    matrix = similarity[layer].tolist()
    names = [plotly_text(source) for source in sources]
    figure = go.Figure(go.Heatmap(z=matrix, x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu_r",
                                  text=[[f"{v:.2f}" for v in row] for row in matrix], texttemplate="%{text}",
                                  colorbar=dict(title="cosine")))
    figure.update_yaxes(autorange="reversed")
    return style(figure, f"Per-source direction similarity, layer {layer}", height=HEIGHT)


_UMAP_LOCK = threading.Lock()


def project_2d(values: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """[N, H] -> [N, 2] by PCA or UMAP (seeded, so a figure is reproducible)."""
    data = values.float().numpy()
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(data)
    if method == "umap":
        import umap

        with _UMAP_LOCK:  # numba compilation is not re-entrant-friendly; one fit at a time
            neighbours = max(2, min(15, len(data) - 1))
            return umap.UMAP(n_components=2, n_neighbors=neighbours, random_state=seed).fit_transform(data)
    raise ValueError(f"unknown projection {method!r}; use pca or umap")


def separation_figure(points: np.ndarray, labels: Sequence[str], sources: Sequence[str], prompts: Sequence[str],
                      layer: int, method: str, position: str = "last") -> go.Figure:
    """Harmful vs benign scatter (colour = label, marker = source); hover shows the prompt."""
    figure = go.Figure()
    source_list = sorted(set(sources))
    for label in ("harmful", "benign"):
        for index, source in enumerate(source_list):
            rows = [i for i in range(len(labels)) if labels[i] == label and sources[i] == source]
            if not rows:
                continue
            figure.add_scatter(
                x=points[rows, 0], y=points[rows, 1], mode="markers", name=f"{label} · {plotly_text(source)}",
                marker=dict(color=LABEL_COLOURS[label], symbol=MARKERS[index % len(MARKERS)], size=9, opacity=0.75,
                            line=dict(width=0.5, color="white")),
                customdata=[[plotly_text(prompts[i])] for i in rows],
                hovertemplate="%{customdata[0]}<extra>" + label + "</extra>")
    axis = "PC" if method == "pca" else "UMAP "
    return style(figure, f"{method.upper()} of layer {layer} activations ({position} token)", f"{axis}1", f"{axis}2",
                 legend_below=True)


def sweep_figure(rows: Sequence[Mapping[str, float]], mode: str, layers: Sequence[int]) -> go.Figure:
    """Toxicity, refusal and visual consistency against steering strength α."""
    figure = go.Figure()
    alphas = [r["alpha"] for r in rows]
    for key, name, colour in (("toxicity", "toxicity", LABEL_COLOURS["harmful"]),
                              ("refusal", "refusal", PALETTE[3]),
                              ("visual_consistency", "visual consistency", PALETTE[2])):
        values = [r.get(key) for r in rows]
        if any(v is not None for v in values):
            figure.add_scatter(x=alphas, y=values, mode="lines+markers", name=name, line=dict(color=colour, width=3))
    layer_text = ",".join(map(str, layers)) if layers else "all"
    return style(figure, f"Strength sweep ({mode}, layers {layer_text})", "strength α", "score")


def metrics_figure(metrics: Mapping[str, Mapping], keys: Sequence[str] = ("asr", "mean_toxicity", "refusal_rate",
                   "benign_accuracy", "over_refusal"), scope: str = "overall") -> go.Figure:
    """Unsteered vs steered bars with bootstrap 95% intervals, one group per metric."""
    figure = go.Figure()
    for condition in ("unsteered", "steered"):
        if condition not in metrics:
            continue
        table = metrics[condition][scope] if scope == "overall" else metrics[condition]["per_source"][scope]
        shown = [k for k in keys if table.get(k) and table[k]["value"] is not None]
        values = [table[k]["value"] for k in shown]
        figure.add_bar(x=[k.replace("_", " ") for k in shown], y=values, name=condition,
                       marker_color=CONDITION_COLOURS[condition],
                       error_y=dict(type="data", symmetric=False,  # no bar where too few inputs for an interval
                                    array=[table[k]["ci"][1] - table[k]["value"] if table[k].get("ci") else 0
                                           for k in shown],
                                    arrayminus=[table[k]["value"] - table[k]["ci"][0] if table[k].get("ci") else 0
                                                for k in shown]))
    figure.update_layout(barmode="group")
    figure.update_yaxes(range=[0, 1.05])
    judge = str(metrics.get("settings", {}).get("asr_judge") or "keyword (not refused)")
    judge = judge.replace("<", "‹").replace(">", "›")[:70]  # plain text in a plotly title
    return style(figure, f"Unsteered vs steered ({plotly_text(scope)}; 95% cluster bootstrap intervals)<br>"
                         f"<sup>ASR judge: {judge}</sup>", None, "rate / score")


def compare_figure(table: Mapping[str, Any], spec: str) -> go.Figure:
    """Grouped bars: each defence's value per column (ASR per attack source, utility, over-refusal, toxicity)
    on one data set, with cluster bootstrap intervals; the ASR judge in the title."""
    figure = go.Figure()
    columns: list[str] = []
    for row in table["rows"].values():
        columns += [c for c in row["cells"][spec] if c not in columns]
    for index, (name, row) in enumerate(table["rows"].items()):
        cells = [row["cells"][spec].get(c) for c in columns]
        figure.add_bar(x=[plotly_text(c) for c in columns], y=[c["value"] if c else None for c in cells],
                       name=plotly_text(name),
                       marker_color=PALETTE[index % len(PALETTE)],
                       error_y=dict(type="data", symmetric=False,
                                    array=[c["ci"][1] - c["value"] if c and c.get("ci") else 0 for c in cells],
                                    arrayminus=[c["value"] - c["ci"][0] if c and c.get("ci") else 0 for c in cells]))
    figure.update_layout(barmode="group")
    figure.update_yaxes(range=[0, 1.05])
    judge = str(table["judges"][spec]).replace("<", "‹").replace(">", "›")[:70]
    data = str(spec).replace("<", "‹").replace(">", "›")[:50]
    return style(figure, f"Defences on {data}<br><sup>ASR judge: {judge}</sup>", None, "rate / score")


CURVE_LABELS = {"loss": "objective loss", "reward": "mean reward", "toxicity": "mean toxicity",
                "visual_consistency": "visual consistency", "refusal_rate": "refusal rate (keyword judge)",
                "fluency": "fluency (exp of mean token log-prob, unsteered model)", "margin": "DPO margin"}


def plotly_text(text: object) -> str:
    """Any data-supplied string (a source, a defence name, a prompt, a token) as plotly shows it literally: plotly
    reads a subset of HTML (<a href>, <b>, <i>, <br>; a token such as </s> would be a tag), so every label,
    legend entry, axis category and hover text made from data goes through here."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def smooth(values: Sequence[float | None], weight: float) -> list[float | None]:
    """An exponential moving average (0 = raw values), skipping gaps."""
    out: list[float | None] = []
    last: float | None = None
    for value in values:
        if value is not None:
            last = value if last is None or weight <= 0 else weight * last + (1 - weight) * value
        out.append(None if value is None else last)
    return out


def curves_figure(steps: Sequence[Mapping[str, float]], keys: Iterable[str] | None = None,
                  smoothing: float = 0.0) -> go.Figure:
    """Stage II training curves from metrics.jsonl rows, one panel per quantity (loss, reward, each reward
    term's mean) on its own labelled axis, integer steps; `smoothing` in [0, 1) draws an EMA over the raw line."""
    from plotly.subplots import make_subplots

    shown = [k for k in (keys if keys is not None else ("loss", *reward_metrics()))
             if any(s.get(k) is not None for s in steps)] or ["loss"]
    figure = make_subplots(rows=len(shown), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                           subplot_titles=[CURVE_LABELS.get(k, k.replace("_", " ")) for k in shown])
    x = [s["step"] for s in steps]
    for row, key in enumerate(shown, start=1):
        raw = [s.get(key) for s in steps]
        colour = PALETTE[(row - 1) % len(PALETTE)]
        figure.add_scatter(x=x, y=raw, mode="lines+markers" if len(x) < 30 else "lines", name=key,
                           line=dict(color=colour, width=1 if smoothing > 0 else 2.5), opacity=0.45
                           if smoothing > 0 else 1.0, showlegend=False, row=row, col=1)
        if smoothing > 0:
            figure.add_scatter(x=x, y=smooth(raw, smoothing), mode="lines", name=f"{key} (EMA {smoothing:g})",
                               line=dict(color=colour, width=2.5), showlegend=False, row=row, col=1)
    figure.update_xaxes(tickformat="d", dtick=max(1, len(x) // 10) if x else 1)
    figure.update_xaxes(title_text="step", row=len(shown), col=1)
    figure = style(figure, "Stage II refinement", None, None)
    figure.update_layout(height=max(HEIGHT, 170 * len(shown)))
    return figure


_EXPORT_LOCK = threading.Lock()
_server_started = False


def _ensure_server() -> None:
    global _server_started
    if not _server_started:
        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _server_started = True


def to_image(figure: go.Figure, fmt: str = "png", scale: float = 2.0) -> bytes:
    """PNG or SVG bytes at publication size (the figure's own width and height, else WIDTH x HEIGHT; PNG at
    `scale`)."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"unknown image format {fmt!r}; use png or svg")
    height = figure.layout.height or HEIGHT
    with _EXPORT_LOCK, warnings.catch_warnings():  # one browser, one export at a time
        warnings.filterwarnings("ignore", message=".*kopts argument is ignored.*")
        try:
            _ensure_server()
            return figure.to_image(format=fmt, width=figure.layout.width or WIDTH, height=height,
                                   scale=scale if fmt == "png" else 1)
        except (RuntimeError, OSError, ImportError) as error:
            if "Chrome" not in str(error) and "chrom" not in str(error).lower():
                raise
            raise ValueError("exporting figures needs Chromium for kaleido (`apt-get install -y chromium`, or "
                             "set BROWSER_PATH); the camera button on each plot still downloads a PNG") from None


def with_caption(figure: go.Figure, caption: str) -> go.Figure:
    """A copy of `figure` with `caption` (what produced it) in small grey text under the plot."""
    captioned = go.Figure(figure)
    height = (figure.layout.height or HEIGHT) + 40
    bottom = (figure.layout.margin.b or 60) + 40
    captioned.update_layout(height=height, margin=dict(b=bottom))
    captioned.add_annotation(text=plotly_text(caption), xref="paper", yref="paper", x=0, y=0, xanchor="left",
                             yanchor="top", yshift=-(bottom - 18), showarrow=False, align="left",
                             font=dict(size=10, color="#666"))
    return captioned


def export(figures: Mapping[str, go.Figure], out_dir: str | Path, formats: Sequence[str] = ("png", "svg"),
           caption: str | None = None) -> list[Path]:
    """Write each figure as NAME.png / NAME.svg in `out_dir` (atomically), with `caption` (what produced it)
    under each when given; returns the paths."""
    from ..core.io import atomic_write_bytes

    out = Path(out_dir)
    paths = []
    for name, figure in figures.items():
        figure = with_caption(figure, caption) if caption else figure
        for fmt in formats:
            path = out / f"{name}.{fmt}"
            atomic_write_bytes(path, to_image(figure, fmt))
            paths.append(path)
    return paths
