"""Figures for report.html, drawn with matplotlib and inlined as SVG.

Why matplotlib: it is maintained, renders offline with no browser or JavaScript (the figure is in
the file, so the page opens anywhere, forever), and needs no system packages; SVG keeps the page
small and sharp. Figures are made with `matplotlib.figure.Figure` directly, not pyplot, and styled
per call with rc_context, so no global backend or setting is changed. Text stays text in the SVG
(svg.fonttype none): a CJK label is drawn by the reader's browser, which falls back to a CJK font as
it does for the page. matplotlib measures it with DejaVu Sans, which has no CJK glyphs (so its
layout allows a little less width than the browser draws), and its warnings about them are
silenced. Only a label that cannot be printed (control characters) is drawn as its number, #1, #2...
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from collections.abc import Callable
from typing import Any

from runner.outputs.evidence import LossCurve

COLOURS = {"precision": "#4C78A8", "recall": "#F58518", "f1": "#54A24B", "valid": "#E45756"}


STYLE = {
    "svg.fonttype": "none",  # text stays text: small, selectable, drawn with the page's fonts
    "svg.hashsalt": "specrun",  # stable ids: the same run renders the same file
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "text.parse_math": False,  # a label is data: "$x$" is drawn as written, "$\\undefined$" no longer loses the figure
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def styled(draw: Callable[..., str]) -> Callable[..., str]:
    """Run a figure function under STYLE, set for that call only (rc_context), so a caller's matplotlib
    settings are left as they were; matplotlib is imported on first use, not when specrun starts."""

    @functools.wraps(draw)
    def wrapper(*args: Any) -> str:
        import matplotlib

        with matplotlib.rc_context(STYLE), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
            return draw(*args)

    return wrapper


def drawable_labels(labels: list[str]) -> list[str]:
    """Labels as a figure draws them: as written, or #1, #2... (their table row) when unprintable."""
    return [label if label.isprintable() else f"#{i}" for i, label in enumerate(labels, 1)]


def _svg(figure: Any, title: str) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE: the SVG sits inside HTML
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{_attribute(title)}" ', 1)


def _attribute(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


@styled
def confusion_heatmap(confusion: dict[str, Any], row: str) -> str:
    """Gold × predicted counts; colour is the share of the gold row, so small classes read as well as big ones."""
    import numpy as np
    from matplotlib.figure import Figure

    labels = drawable_labels([str(label) for label in confusion["labels"]])
    counts = np.array(confusion["matrix"], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = max(4.0, 0.42 * len(labels) + 2.2)
    figure = Figure(figsize=(size + 1.2, size))
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="equal")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(f"Confusion matrix ({row}): counts, colour = share of the gold row")
    for spine in axes.spines.values():
        spine.set_visible(False)
    small = len(labels) > 12
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j]:
                axes.text(
                    j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7 if small else 8,
                    color="white" if shares[i, j] > 0.55 else "#1f2937",
                )  # fmt: skip
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of gold row")
    return _svg(figure, f"Confusion matrix of {row}")


@styled
def score_bars(items: dict[str, dict[str, Any]], row: str, what: str) -> str:
    """Precision, recall and F1 side by side for each class or entity type."""
    import numpy as np
    from matplotlib.figure import Figure

    labels = drawable_labels(list(items))
    x = np.arange(len(labels))
    width = 0.27
    figure = Figure(figsize=(max(6.0, 0.75 * len(labels) + 2), 3.6))
    axes = figure.add_subplot()
    for offset, key in zip((-width, 0, width), ("precision", "recall", "f1"), strict=True):
        values = [float(items[name].get(key) or 0.0) for name in items]
        axes.bar(x + offset, values, width, label=key if key != "f1" else "F1", color=COLOURS[key])
    axes.set_xticks(x, labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("score")
    axes.set_title(f"Precision, recall and F1 per {what} ({row})")
    axes.grid(axis="y", color="#e5e7eb", linewidth=0.8)
    axes.set_axisbelow(True)
    axes.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never on them
    return _svg(figure, f"Precision, recall and F1 per {what} of {row}")


@styled
def loss_plot(curve: LossCurve) -> str:
    """Train loss by step (job events), and per-checkpoint train and validation loss when recorded."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.2))
    axes = figure.add_subplot()
    if curve.train:  # single steps' losses are noisy (one batch each): points, under the checkpoint means
        steps, losses = zip(*curve.train, strict=True)
        axes.plot(
            steps, losses, "o-" if len(steps) <= 60 else "-", markersize=3, linewidth=0.8, alpha=0.55,
            color=COLOURS["precision"], label="train loss of single steps (job events)",
        )  # fmt: skip
    if curve.checkpoint_train:
        steps, losses = zip(*curve.checkpoint_train, strict=True)
        axes.plot(
            steps, losses, "s-", markersize=5, linewidth=2, color="#1f2937",
            label="train loss, mean since the previous checkpoint",
        )  # fmt: skip
    if curve.valid:
        steps, losses = zip(*curve.valid, strict=True)
        axes.plot(steps, losses, "D-", markersize=5, linewidth=2, color=COLOURS["valid"], label="validation loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("Fine-tuning loss")
    axes.grid(color="#e5e7eb", linewidth=0.8)
    axes.set_ylim(bottom=0)
    axes.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _svg(figure, "Fine-tuning loss by step")
