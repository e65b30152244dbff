"""The evaluation report: champion vs challenger on the same holdout, as markdown with plots."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ScoredModel:
    """One model's scores on the holdout and where it came from."""

    label: str  # "challenger v7"
    version: str
    scores: np.ndarray
    run_url: str


def roc_points(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (for plotting)."""
    order = np.argsort(-scores, kind="mergesort")
    y_sorted = y[order].astype(float)
    distinct = np.r_[np.flatnonzero(np.diff(scores[order])), len(y) - 1]
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(tps[-1], 1.0)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1.0)]
    return fpr, tpr


def calibration_points(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted vs observed churn rate per score decile (equal-count bins)."""
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, bins + 1)))
    idx = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"bin": idx, "predicted": scores, "observed": y})
    return frame.groupby("bin").agg(
        predicted=("predicted", "mean"), observed=("observed", "mean"), rows=("observed", "size")
    )


def plots_png(y: np.ndarray, models: list[ScoredModel]) -> dict[str, bytes]:
    """ROC curves and a calibration plot of every model, as PNG bytes keyed by file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=90)
    for m in models:
        fpr, tpr = roc_points(y, m.scores)
        ax.plot(fpr, tpr, label=m.label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on the holdout")
    ax.legend(loc="lower right")
    out["roc.png"] = _png(fig)
    fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=90)
    for m in models:
        cal = calibration_points(y, m.scores)
        ax.plot(cal["predicted"], cal["observed"], marker="o", label=m.label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="mean predicted churn", ylabel="observed churn rate", title="Calibration (deciles)"
    )
    ax.legend(loc="upper left")
    out["calibration.png"] = _png(fig)
    plt.close("all")
    return out


def _png(fig: object) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(buffer, format="png")  # type: ignore[attr-defined]
    return buffer.getvalue()


def embed_png(png: bytes, alt: str) -> str:
    """Markdown image with the PNG inline (the Dagster UI renders data URIs)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
