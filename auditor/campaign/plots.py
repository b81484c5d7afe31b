"""The campaign's accuracy plots, in the style of the seed study: one PNG per model, x the
environments (target / image / variation), y the accuracy, a point per run (spread horizontally
by a fixed rule, not at random) and a min-max bar per environment; the title names the model and
its campaign-wide range. Beside each PNG a JSON sidecar lists what was drawn, read back from the
figure's artists (the points, the bars, the tick labels, the title and the pixel size).

Deterministic: the Agg backend, matplotlib's default style, a fixed DPI and no PNG metadata (no
software name, no date), so the same model entry gives the same bytes. Text from results (model
and image names) is drawn as plain text (no mathtext)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib import style  # after choosing the backend
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure

from auditor.campaign.aggregate import DASH, percent

DPI = 100
JITTER = 0.28  # the width the points of one environment spread over, in environments
_RC = {"text.parse_math": False, "svg.hashsalt": "auditor", "font.size": 9}


def jitter(count: int) -> list[float]:
    """Horizontal offsets of ``count`` points: evenly spread, centred (0 for one point)."""
    if count < 2:
        return [0.0] * count
    return [-JITTER / 2 + JITTER * k / (count - 1) for k in range(count)]


def title(model: Mapping[str, Any]) -> str:
    low, high, spread = model.get("min"), model.get("max"), model.get("range")
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        return f"{model.get('name')}: no accuracy recorded"
    if not spread:
        return f"{model.get('name')}: accuracy {low:.4g} in every run"
    return f"{model.get('name')}: accuracy range {percent(float(spread))} ({low:.4g}{DASH}{high:.4g})"


def sidecar(out: Path) -> Path:
    """Where :func:`accuracy_plot` writes what it drew: ``NAME.png`` -> ``NAME.json``."""
    return out.with_suffix(".json")


def accuracy_plot(model_entry: Mapping[str, Any], out: Path, width_px: int = 900,
                  height_px: int = 500) -> Path:
    """Draw ``model_entry`` (one of the campaign document's ``models``) to the PNG ``out`` and its
    sidecar (:func:`sidecar`); returns ``out``."""
    environments = [e for e in model_entry.get("environments") or [] if isinstance(e, Mapping)]
    with style.context("default"), matplotlib.rc_context(_RC):
        figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
        canvas = FigureCanvasAgg(figure)
        many = len(environments) > 6
        # rotated labels need room below and to the left; the figure's size never changes
        axes = figure.add_axes((0.16, 0.3, 0.82, 0.6) if many else (0.08, 0.2, 0.9, 0.7))
        xs, ys, bars = [], [], []
        for x, env in enumerate(environments):
            values = [float(v) for v in env.get("values") or []]
            xs += [x + dx for dx in jitter(len(values))]
            ys += values
            if values:
                bars.append((x, min(values), max(values)))
        axes.vlines([b[0] for b in bars], [b[1] for b in bars], [b[2] for b in bars],
                    colors="#9bb7d4", linewidths=8, gid="range")
        for end in (1, 2):  # caps at min and max: a bar of one value is still seen
            axes.hlines([b[end] for b in bars], [b[0] - 0.2 for b in bars], [b[0] + 0.2 for b in bars],
                        colors="#5b84b1", linewidths=1.5, gid="cap")
        axes.scatter(xs, ys, s=16, color="#1f4e79", zorder=3)
        labels = [str(e.get("label") or "") if many else str(e.get("label") or "").replace(" / ", "\n")
                  for e in environments]
        axes.set_xticks(range(len(environments)), labels, rotation=40 if many else 0,
                        ha="right" if many else "center", rotation_mode="anchor", fontsize=7 if many else 8)
        axes.set_xlim(-0.6, max(len(environments), 1) - 0.4)
        axes.set_ylabel("accuracy")
        axes.grid(axis="y", alpha=0.3)
        axes.set_title(title(model_entry))
        drawn = _drawn(figure, axes)
        out.parent.mkdir(parents=True, exist_ok=True)
        canvas.print_png(str(out), metadata={"Software": None})
    width, height = canvas.get_width_height()
    sidecar(out).write_text(json.dumps({**drawn, "width_px": width, "height_px": height}, indent=1) + "\n")
    return out


def _drawn(figure: Figure, axes: Any) -> dict[str, Any]:
    """What the axes hold: their points, bars, tick labels and title (not what was asked for)."""
    figure.canvas.draw()
    points = [[float(x), float(y)] for c in axes.collections if isinstance(c, PathCollection)
              for x, y in c.get_offsets()]
    bars = [[float(seg[0][0]), float(seg[0][1]), float(seg[1][1])] for c in axes.collections
            if isinstance(c, LineCollection) and c.get_gid() == "range" for seg in c.get_segments()]
    return {"title": axes.get_title(), "xticklabels": [t.get_text() for t in axes.get_xticklabels()],
            "points": points, "bars": bars}
