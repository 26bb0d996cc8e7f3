"""Server-side plots of a study's results (matplotlib's object API on the Agg canvas).

Never imports ``matplotlib.pyplot``: pyplot keeps global figure state, which leaks memory and
is not thread-safe in a web process. Each function builds a fresh :class:`Figure`;
:func:`figure_bytes` renders it to PNG or SVG.

One plot per figure; every legend sits outside the axes (below them), so it never covers data;
trust plots name the models ("model A = <name>"). Methods whose score is low by design
(:data:`LOW_BY_DESIGN`) are marked with a dagger, explained on the results page.

Plots:
    * :func:`accuracy_figure` - accuracy per method with the Wilson and cluster-bootstrap
      intervals and the chance line (class discrimination).
    * :func:`answers_figure` - the answers per method as stacked bars: correct / wrong
      (discrimination) or the five trust answers (:func:`trust_answers_figure`).
    * :func:`trust_figure` - mean score towards model B with the bootstrap interval (trust).
    * :func:`timeline_figure` - cumulative judgments over time.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from studies.analysis import DiscriminationRow, TrustRow

__all__ = [
    "LOW_BY_DESIGN", "PLOT_NAMES", "accuracy_figure", "answers_figure", "figure_bytes", "method_label",
    "timeline_figure", "trust_answers_figure", "trust_figure",
]  # fmt: skip

#: The plots of the built-in designs (a design declares its own: ``Design.result_plots``; the
#: results page adds the timeline). The figure functions below take ``(rows, *, title, model_a, model_b)``.
PLOT_NAMES = ("scores", "answers", "timeline")
TRUST_LABELS = ("A clearly", "A slightly", "equal", "B slightly", "B clearly")
TRUST_COLOURS = ("#b2182b", "#ef8a62", "#d9d9d9", "#67a9cf", "#2166ac")
#: Methods (and evaluation controls) whose human or automatic score is expected to be low by design,
#: with the reason shown on the results page.
LOW_BY_DESIGN = {
    "counterfactual_gradcam": "Counterfactual Grad-CAM highlights the evidence against the explained class (it "
    "points at the other category), so a low accuracy (below chance) is expected by design: it checks that "
    "workers read the map, it is not a failure.",
    "control:random": "a baseline: a random map that knows nothing about the image or the model. It shows what an "
    "uninformative map scores; it is expected to do poorly and to fail the sanity check.",
    "control:gaussian": "a baseline: a centred Gaussian blob that ignores the model. Expected to do poorly except where "
    "objects sit in the centre, and to fail the sanity check.",
    "control:sobel": "a baseline: the image's edges, ignoring the model. Expected to do poorly on model-dependent "
    "metrics and to fail the sanity check.",
}
DAGGER = "\u2020"


def method_label(method: str) -> str:
    """The method's name, with a dagger when its score is low by design (:data:`LOW_BY_DESIGN`)."""
    return f"{method}{DAGGER}" if method in LOW_BY_DESIGN else method


def _models_line(model_a: str, model_b: str) -> str:
    """``model A = <name>`` and ``model B = <name>`` on lines of their own, wrapped (names can be long)."""
    if not (model_a or model_b):
        return ""
    lines = [f"model A = {model_a or '?'}", f"model B = {model_b or '?'}"]
    return "\n".join(part for line in lines for part in textwrap.wrap(line, width=56, break_on_hyphens=False))


def _empty(fig: Figure, ax, message: str) -> Figure:  # type: ignore[no-untyped-def]
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _height(n_rows: int, extra: float = 0.0) -> float:
    """Figure height (inches): room per method row, for the axis label and for a legend below."""
    return 1.5 + extra + 0.42 * max(n_rows, 2)


def _legend_below(fig: Figure, ax, ncols: int) -> None:  # type: ignore[no-untyped-def]
    """The legend under the axes (outside them, so it never covers data), left to the layout engine."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small", frameon=False)


def _method_rows(rows: Sequence[Any], *, row_height: float) -> tuple[Figure, Any, list[Any], np.ndarray]:
    """A one-plot figure sized for the methods that have judgments, and their y positions (top first)."""
    shown = [r for r in rows if r.n_judgments > 0]
    fig = Figure(figsize=(7.0, _height(len(shown), row_height)), layout="constrained")
    return fig, fig.add_subplot(), shown, np.arange(len(shown))[::-1]


def accuracy_figure(rows: Sequence[DiscriminationRow], *, title: str = "", model_a: str = "", model_b: str = "") -> Figure:
    """Accuracy per method: point, Wilson 95% interval (thick) and cluster-bootstrap interval (thin).
    ``model_a``/``model_b`` are taken like the other plots' and not shown (one model)."""
    fig, ax, shown, y = _method_rows(rows, row_height=0.35)
    if not shown:
        return _empty(fig, ax, "no judgments yet")
    acc = np.array([r.accuracy for r in shown])
    for yy, r in zip(y, shown, strict=True):
        if np.isfinite(r.boot_low):
            ax.plot([r.boot_low, r.boot_high], [yy, yy], color="#9ecae1", lw=7, solid_capstyle="butt",
                    label="cluster bootstrap 95%" if yy == y[0] else None)  # fmt: skip
        ax.plot([r.wilson_low, r.wilson_high], [yy, yy], color="#08519c", lw=2,
                label="Wilson 95%" if yy == y[0] else None)  # fmt: skip
    ax.plot(acc, y, "o", color="#08306b", ms=6, zorder=3, label="accuracy")
    ax.axvline(shown[0].chance, color="#999", ls="--", lw=1, label=f"chance ({shown[0].chance:.2f})")
    ax.set_yticks(y, [f"{method_label(r.method)} (n={r.n_judgments})" for r in shown])
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (share of correct judgments)")
    ax.grid(axis="x", alpha=0.3)
    _legend_below(fig, ax, ncols=4)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def trust_figure(rows: Sequence[TrustRow], *, title: str = "", model_a: str = "", model_b: str = "") -> Figure:
    """Mean trust score towards model B per method, with its bootstrap 95% interval (one plot)."""
    fig, ax, shown, y = _method_rows(rows, row_height=0.35)
    if not shown:
        return _empty(fig, ax, "no judgments yet")
    for yy, r in zip(y, shown, strict=True):
        if np.isfinite(r.boot_low):
            ax.plot([r.boot_low, r.boot_high], [yy, yy], color="#2166ac", lw=2,
                    label="bootstrap 95% CI" if yy == y[0] else None)  # fmt: skip
    ax.plot([r.mean for r in shown], y, "o", color="#053061", ms=6, zorder=3, label="mean score")
    ax.axvline(0, color="#999", ls="--", lw=1, label="no preference")
    ax.set_xlim(-2, 2)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_xticks([-2, -1, 0, 1, 2], ["\u22122", "\u22121", "0", "+1", "+2"])
    models = _models_line(model_a, model_b)
    ax.set_xlabel("mean score towards model B (\u22122 A clearly \u2026 +2 B clearly)" + (f"\n{models}" if models else ""))
    ax.set_yticks(y, [f"{method_label(r.method)} (n={r.n_judgments})" for r in shown])
    ax.grid(axis="x", alpha=0.3)
    _legend_below(fig, ax, ncols=3)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def trust_answers_figure(rows: Sequence[TrustRow], *, title: str = "", model_a: str = "", model_b: str = "") -> Figure:
    """The five trust answers per method as stacked shares (one plot; the legend names the models)."""
    fig, ax, shown, y = _method_rows(rows, row_height=0.75)
    if not shown:
        return _empty(fig, ax, "no judgments yet")
    shares = np.array([[r.share_minus2, r.share_minus1, r.share_0, r.share_plus1, r.share_plus2] for r in shown])
    start = np.zeros(len(shown))
    for k in range(5):
        ax.barh(y, shares[:, k], left=start, color=TRUST_COLOURS[k], label=TRUST_LABELS[k], height=0.7)
        start += shares[:, k]
    ax.set_yticks(y, [f"{method_label(r.method)} (n={r.n_judgments})" for r in shown])
    ax.set_xlim(0, 1)
    models = _models_line(model_a, model_b)
    ax.set_xlabel("share of answers: whose explanation is more reasonable" + (f"\n{models}" if models else ""))
    _legend_below(fig, ax, ncols=5)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def answers_figure(
    rows: Sequence[DiscriminationRow] | Sequence[TrustRow], *, title: str = "", model_a: str = "", model_b: str = ""
) -> Figure:
    """Stacked bars of the answers per method: trust's five answers, or correct/wrong."""
    if rows and isinstance(rows[0], TrustRow):
        return trust_answers_figure(rows, title=title, model_a=model_a, model_b=model_b)  # type: ignore[arg-type]
    fig, ax, shown, y = _method_rows(rows, row_height=0.35)
    if not shown:
        return _empty(fig, ax, "no judgments yet")
    right = np.array([r.n_correct / r.n_judgments for r in shown])  # type: ignore[union-attr]
    ax.barh(y, right, color="#2166ac", height=0.7, label="correct")
    ax.barh(y, 1 - right, left=right, color="#ef8a62", height=0.7, label="wrong")
    ax.set_yticks(y, [method_label(r.method) for r in shown])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of judgments")
    _legend_below(fig, ax, ncols=2)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def timeline_figure(edges_ms: Sequence[int], counts: Sequence[int], *, title: str = "") -> Figure:
    """Cumulative number of main judgments over time (UTC)."""
    fig = Figure(figsize=(7.0, 2.6), layout="constrained")
    ax = fig.add_subplot()
    if not counts:
        return _empty(fig, ax, "no judgments yet")
    edges = [datetime.fromtimestamp(e / 1000.0, tz=UTC) for e in edges_ms]
    cumulative = np.concatenate([[0], np.cumsum(counts)])
    ax.step(edges, cumulative, where="post", color="#08519c")
    ax.fill_between(edges, cumulative, step="post", alpha=0.15, color="#08519c")
    ax.set_ylabel("judgments (cumulative)")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def figure_bytes(fig: Figure, fmt: Literal["png", "svg"] = "png", *, dpi: int = 110) -> bytes:
    """Render ``fig`` to PNG or SVG bytes on a fresh Agg canvas.

    Raises:
        ValueError: For any other format.
    """
    if fmt not in ("png", "svg"):
        raise ValueError(f"plot format must be 'png' or 'svg', got {fmt!r}")
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata={"Software": None} if fmt == "png" else {"Date": None})
    return buffer.getvalue()
