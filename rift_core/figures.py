"""The paper's figures from plain frames, with matplotlib (Agg): each function returns a Figure.

    loss_curves(curves)            training loss per optimizer step, a line per method
    collapse_figure(frame)         loss and validation Mean@k per epoch: the naive loss collapses, RIFT's does not
    bars_with_error(frame, ...)    grouped bars with error bars (e.g. reward schemes' Avg Mean@8 ± std)
    accuracy_vs_memory(frame)      Figure 1: Avg Mean@8 against peak training memory
    lines_per_k(frame, columns)    metrics per K (log2 axis)
    save_png(fig, path)            atomic PNG write; markdown_image(fig, alt): a markdown image with a data URI

Figures are built without pyplot's registry (matplotlib.figure.Figure), so they need no closing; std columns may
be null (a single seed) and then draw no error bar.
"""
import base64
import io
import os
import sys
from pathlib import Path

import polars as pl

from rift_core.io import tmp_beside

DPI = 90


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _require(frame: pl.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: frame lacks column(s) {', '.join(missing)} (have {', '.join(frame.columns) or 'none'})")
    if frame.height == 0:
        raise ValueError(f"{what}: frame has no rows")


def _err(frame: pl.DataFrame, column: str) -> list[float]:
    """An error column as floats, null / NaN (one seed) as 0."""
    return frame.select(pl.col(column).cast(pl.Float64).fill_nan(None).fill_null(0.0))[column].to_list()


def _groups(frame: pl.DataFrame, column: str):
    """(value, rows) per distinct value of `column`, in first-seen order."""
    for value in frame[column].unique(maintain_order=True).to_list():
        yield value, frame.filter(pl.col(column) == value) if value is not None else frame.filter(pl.col(column).is_null())


def loss_curves(curves: dict[str, list[float]], title: str = "training loss per optimizer step"):
    """One line per method: its loss at optimizer steps 1, 2, ..."""
    if not curves:
        raise ValueError("loss_curves: no curves given")
    fig, (ax,) = _figure()
    for name, losses in curves.items():
        losses = list(losses)
        ax.plot(range(1, len(losses) + 1), losses, lw=1.2, label=str(name), marker="o" if len(losses) == 1 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return fig


def collapse_figure(frame: pl.DataFrame, title: str | None = None):
    """Two panels side by side, a line per method: training loss per epoch, and validation Mean@k (%) per epoch.
    Columns method, epoch, loss, mean_at_k (a fraction, as in the score rows). The paper's point: the naive
    reward-weighted loss falls without bound while its accuracy collapses; RIFT's loss stays bounded."""
    _require(frame, ["method", "epoch", "loss", "mean_at_k"], "collapse_figure")
    fig, (left, right) = _figure(ncols=2)
    for method, rows in _groups(frame, "method"):
        rows = rows.sort("epoch")
        marker = "o" if rows.height <= 20 else None
        left.plot(rows["epoch"].to_list(), rows["loss"].to_list(), marker=marker, lw=1.2, label=str(method))
        right.plot(rows["epoch"].to_list(), (rows["mean_at_k"] * 100).to_list(), marker=marker, lw=1.2, label=str(method))
    left.set(xlabel="epoch", ylabel="training loss", title="loss")
    right.set(xlabel="epoch", ylabel="validation Mean@k (%)", title="accuracy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def bars_with_error(frame: pl.DataFrame, x: str, y: str, err: str | None = None, title: str = "",
                    hue: str | None = None, ylabel: str | None = None):
    """Bars of `y` per value of `x` with error bars `err` (null: none); with `hue`, grouped bars, one colour
    per hue value (e.g. x = benchmark, hue = reward scheme)."""
    _require(frame, [c for c in (x, y, err, hue) if c is not None], "bars_with_error")
    import numpy as np

    fig, (ax,) = _figure(width=max(5.0, 0.6 * frame[x].n_unique() * (frame[hue].n_unique() if hue else 1) + 1.5))
    cats = frame[x].unique(maintain_order=True).to_list()
    groups = list(_groups(frame, hue)) if hue else [(None, frame)]
    width = 0.8 / len(groups)
    for i, (name, rows) in enumerate(groups):
        pos = {c: j for j, c in enumerate(cats)}
        xs = np.array([pos[c] for c in rows[x].to_list()], dtype=float) - 0.4 + width * (i + 0.5)
        errs = _err(rows, err) if err else None
        ax.bar(xs, rows[y].cast(pl.Float64).to_list(), width=width * 0.95, yerr=errs, capsize=3,
               label=str(name) if hue else None)
    tilt = len(cats) > 4
    ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if hue:
        ax.legend(fontsize=8, title=hue)
    return fig


def accuracy_vs_memory(frame: pl.DataFrame, title: str = "accuracy against training memory",
                       ylabel: str = "Avg Mean@8 (%)"):
    """The paper's Figure 1: x = peak training memory (GB), y = Avg Mean@8 (%), one labelled point per method
    with a vertical error bar (std over seeds; null for one seed). Columns method, peak_memory_gb, mean, std
    (mean and std in percent, as `results.seed_long` gives them)."""
    _require(frame, ["method", "peak_memory_gb", "mean", "std"], "accuracy_vs_memory")
    fig, (ax,) = _figure(width=5.5, height=3.8)
    xs = frame["peak_memory_gb"].cast(pl.Float64).to_list()
    ys = frame["mean"].cast(pl.Float64).to_list()
    errs = _err(frame, "std")
    for method, xv, yv, ev in zip(frame["method"].to_list(), xs, ys, errs):
        ax.errorbar([xv], [yv], yerr=[ev], fmt="o", capsize=3, ms=6, label=str(method))
        ax.annotate(str(method), (xv, yv), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("peak training memory (GB)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.15)
    return fig


def lines_per_k(frame: pl.DataFrame, y_columns, x: str = "k", hue: str | None = None, title: str = ""):
    """One panel per column of `y_columns` (e.g. ["pct_mixed", "mean_at_k"]), the value against K on a log2
    axis with a tick at each K present; with `hue` (e.g. method) a line per value."""
    y_columns = [y_columns] if isinstance(y_columns, str) else list(y_columns)
    if not y_columns:
        raise ValueError("lines_per_k: no y columns given")
    _require(frame, [x, *y_columns, *([hue] if hue else [])], "lines_per_k")
    if (frame[x].cast(pl.Float64) <= 0).any():
        raise ValueError(f"lines_per_k: {x} must be positive for a log2 axis")
    fig, axes = _figure(ncols=len(y_columns), width=4.2)
    ks = sorted(frame[x].unique().to_list())
    groups = list(_groups(frame, hue)) if hue else [(None, frame)]
    for ax, col in zip(axes, y_columns):
        for name, rows in groups:
            rows = rows.sort(x)
            ax.plot(rows[x].to_list(), rows[col].to_list(), marker="o", lw=1.2, label=str(name) if hue else None)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set(xlabel=x.upper() if x == "k" else x, ylabel=col)
        ax.grid(alpha=0.3)
        if hue:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _png(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _close(fig) -> None:
    if "matplotlib.pyplot" in sys.modules:  # a pyplot-made figure sits in pyplot's registry until closed
        sys.modules["matplotlib.pyplot"].close(fig)


def save_png(fig, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write `fig` as PNG to `path` atomically (a temporary file beside it, then a rename); returns the path.
    The figure stays open (markdown_image may follow)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_beside(path)
    try:
        tmp.write_bytes(_png(fig, dpi))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def markdown_image(fig, alt: str, dpi: int = DPI, close: bool = True) -> str:
    """`fig` as a markdown image with a base64 PNG data URI (the Dagster UI shows it inline); closes a pyplot
    figure unless `close=False`."""
    data = base64.b64encode(_png(fig, dpi)).decode()
    if close:
        _close(fig)
    return f"![{alt}](data:image/png;base64,{data})"
