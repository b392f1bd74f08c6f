"""How well predictions rank and match true labels: Spearman's rho and Kendall's tau (scipy), mean absolute
error; and the scatter plot of predicted against true (matplotlib)."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def scores(predicted: Sequence[float], true: Sequence[float]) -> dict[str, float | int | None]:
    """``spearman``, ``kendall`` (None where undefined: fewer than 2 archs or constant predictions), ``mae`` and
    ``n``."""
    from scipy.stats import kendalltau, spearmanr  # SciPy: only when archs are ranked

    n = len(true)
    out: dict[str, float | int | None] = {"n": n, "mae": sum(abs(p - t) for p, t in zip(predicted, true)) / n
                                          if n else None}
    for key, fn in (("spearman", spearmanr), ("kendall", kendalltau)):
        value = None
        if n >= 2:
            with warnings.catch_warnings():  # a constant input: scipy warns and returns NaN, which is None here
                warnings.simplefilter("ignore")
                value = float(fn(predicted, true)[0])
        out[key] = value if value is not None and math.isfinite(value) else None
    return out


def score_text(value: float | None, digits: int = 3) -> str:
    """A score of :func:`scores` for a table: ``digits`` decimals, "n/a" where it is undefined."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def scatter_plot(path: str | Path, panels: list[dict[str, Any]]) -> None:
    """One panel per task: ``{"title", "label", "predicted", "true", "spearman"}``; the diagonal is y = x."""
    import matplotlib  # matplotlib: only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: only when a plot is drawn

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        ax.scatter(panel["true"], panel["predicted"], s=12, alpha=0.7)
        values = list(panel["true"]) + list(panel["predicted"])
        if values:
            lo, hi = min(values), max(values)
            ax.plot([lo, hi], [lo, hi], color="grey", linewidth=0.8, linestyle="--")
        rho = panel["spearman"]
        ax.set_title(f"{panel['title']} (Spearman {rho:.2f})" if rho is not None else panel["title"], fontsize=9)
        ax.set_xlabel(f"true {panel['label']}")
        ax.set_ylabel(f"predicted {panel['label']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
