"""Server-side plots of a study's results (matplotlib's object API on the Agg canvas).

Never imports ``matplotlib.pyplot``: pyplot keeps global figure state, which leaks memory and
is not thread-safe in a web process. Each function builds a fresh :class:`Figure`;
:func:`figure_bytes` renders it to PNG or SVG.

Plots:
    * :func:`accuracy_figure` - accuracy per method with the Wilson and cluster-bootstrap
      intervals and the chance line (class discrimination).
    * :func:`trust_figure` - mean score towards model B with the bootstrap interval, and the
      five answers per method as stacked bars (trust).
    * :func:`timeline_figure` - cumulative judgments over time.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from studies.analysis import DiscriminationRow, TrustRow

__all__ = ["PLOT_NAMES", "accuracy_figure", "answers_figure", "figure_bytes", "timeline_figure", "trust_figure"]

PLOT_NAMES = ("scores", "answers", "timeline")
TRUST_LABELS = ("A clearly", "A slightly", "equal", "B slightly", "B clearly")
TRUST_COLOURS = ("#b2182b", "#ef8a62", "#d9d9d9", "#67a9cf", "#2166ac")


def _empty(fig: Figure, ax, message: str) -> Figure:  # type: ignore[no-untyped-def]
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def accuracy_figure(rows: Sequence[DiscriminationRow], *, title: str = "") -> Figure:
    """Accuracy per method: point, Wilson 95% interval (thick) and cluster-bootstrap interval (thin)."""
    fig = Figure(figsize=(7.0, 0.5 + 0.45 * max(len(rows), 2)), layout="constrained")
    ax = fig.add_subplot()
    shown = [r for r in rows if r.n_judgments > 0]
    if not shown:
        return _empty(fig, ax, "no judgments yet")
    y = np.arange(len(shown))[::-1]
    acc = np.array([r.accuracy for r in shown])
    for yy, r in zip(y, shown, strict=True):
        if np.isfinite(r.boot_low):
            ax.plot([r.boot_low, r.boot_high], [yy, yy], color="#9ecae1", lw=7, solid_capstyle="butt",
                    label="cluster bootstrap" if yy == y[0] else None)  # fmt: skip
        ax.plot([r.wilson_low, r.wilson_high], [yy, yy], color="#08519c", lw=2,
                label="Wilson" if yy == y[0] else None)  # fmt: skip
    ax.plot(acc, y, "o", color="#08306b", ms=6, zorder=3)
    ax.axvline(shown[0].chance, color="#999", ls="--", lw=1, label="chance")
    ax.set_yticks(y, [f"{r.method} (n={r.n_judgments})" for r in shown])
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (share of correct judgments), 95% intervals")
    ax.legend(loc="lower right", fontsize="small", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title, fontsize="medium")
    return fig


def trust_figure(rows: Sequence[TrustRow], *, title: str = "") -> Figure:
    """Mean trust score towards model B with its bootstrap interval (left); the five answers (right)."""
    fig = Figure(figsize=(9.0, 0.8 + 0.45 * max(len(rows), 2)), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True, width_ratios=(1, 1.4))
    shown = [r for r in rows if r.n_judgments > 0]
    if not shown:
        return _empty(fig, left, "no judgments yet")
    y = np.arange(len(shown))[::-1]
    for yy, r in zip(y, shown, strict=True):
        if np.isfinite(r.boot_low):
            left.plot([r.boot_low, r.boot_high], [yy, yy], color="#2166ac", lw=2)
    left.plot([r.mean for r in shown], y, "o", color="#053061", ms=6)
    left.axvline(0, color="#999", ls="--", lw=1)
    left.set_xlim(-2, 2)
    left.set_xlabel("mean score towards model B (-2..+2), 95% CI")
    left.set_yticks(y, [f"{r.method} (n={r.n_judgments})" for r in shown])
    left.grid(axis="x", alpha=0.3)
    shares = np.array([[r.share_minus2, r.share_minus1, r.share_0, r.share_plus1, r.share_plus2] for r in shown])
    start = np.zeros(len(shown))
    for k in range(5):
        right.barh(y, shares[:, k], left=start, color=TRUST_COLOURS[k], label=TRUST_LABELS[k], height=0.7)
        start += shares[:, k]
    right.set_xlim(0, 1)
    right.set_xlabel("share of answers (model A / model B more reasonable)")
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=5, fontsize="x-small", frameon=False)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def answers_figure(rows: Sequence[DiscriminationRow] | Sequence[TrustRow], *, title: str = "") -> Figure:
    """Stacked bars of the answers per method: trust's five answers, or correct/incorrect."""
    if rows and isinstance(rows[0], TrustRow):
        return trust_figure(rows, title=title)  # type: ignore[arg-type]
    fig = Figure(figsize=(7.0, 0.5 + 0.45 * max(len(rows), 2)), layout="constrained")
    ax = fig.add_subplot()
    shown = [r for r in rows if r.n_judgments > 0]
    if not shown:
        return _empty(fig, ax, "no judgments yet")
    y = np.arange(len(shown))[::-1]
    right = np.array([r.n_correct / r.n_judgments for r in shown])  # type: ignore[union-attr]
    ax.barh(y, right, color="#2166ac", height=0.7, label="correct")
    ax.barh(y, 1 - right, left=right, color="#ef8a62", height=0.7, label="wrong")
    ax.set_yticks(y, [r.method for r in shown])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of judgments")
    ax.legend(loc="lower right", fontsize="small")
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
