"""Figures drawn by the package (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pkpd_cart.model.modelling import Model  # noqa: E402


def plot_simulation(
    model: Model,
    frame: pd.DataFrame,
    outputs: Sequence[str] | None = None,
    path: str | Path | None = None,
    log: bool = True,
    title: str | None = None,
):
    """One panel per output (observables by default) against time; returns the figure."""
    outputs = list(outputs or model.observables)
    fig, axes = plt.subplots(len(outputs), 1, figsize=(7, 2.8 * len(outputs)), squeeze=False)
    for ax, name in zip(axes[:, 0], outputs):
        unit = (model.observables.get(name) or model.states.get(name)).unit
        ax.plot(frame["time"], frame[name], color="C0")
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(f"{name} ({unit})")
        ax.grid(True, which="both", alpha=0.3)
    axes[-1, 0].set_xlabel(f"time ({model.time_unit})")
    axes[0, 0].set_title(title or model.name)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def plot_population_bands(
    times,
    panels: dict,
    path: str | Path | None = None,
    title: str = "",
    log: Sequence[str] = (),
    references: dict | None = None,
):
    """Median and 5-95% / 25-75% bands per panel.

    ``panels`` maps a label (with unit) to a (n_individuals, n_times) array; labels in
    ``log`` get a log axis; ``references`` maps a label to horizontal reference lines
    ``{name: y}`` (e.g. an assay cut-off).
    """
    import numpy as np

    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), squeeze=False)
    for ax, (label, values) in zip(axes[:, 0], panels.items()):
        q = np.nanquantile(values, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ax.fill_between(times, q[0], q[4], color="C0", alpha=0.2, lw=0, label="5-95%")
        ax.fill_between(times, q[1], q[3], color="C0", alpha=0.35, lw=0, label="25-75%")
        ax.plot(times, q[2], color="C0", lw=1.5, label="median")
        for name, y in (references or {}).get(label, {}).items():
            ax.axhline(y, color="0.4", ls=":", lw=1)
            ax.text(times[-1], y, f" {name}", va="bottom", ha="right", fontsize=7, color="0.3")
        if label in log:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("days from CAR-T infusion")
    axes[0, 0].set_title(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def plot_correlation(matrix, names, path=None, title: str = "Correlation of the estimates"):
    """A correlation matrix as a heat map (-1 blue to +1 red) with the values written in;
    written to ``path`` if given, and returned."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    corr = np.asarray(matrix, dtype=float)
    size = len(names)
    fig, ax = plt.subplots(figsize=(1.5 + 0.55 * size, 1.0 + 0.5 * size))
    image = ax.imshow(corr, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(size), names, rotation=90, fontsize=7)
    ax.set_yticks(range(size), names, fontsize=7)
    if size <= 30:
        for i in range(size):
            for j in range(size):
                if np.isfinite(corr[i, j]):
                    ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def binned_median(x: np.ndarray, y: np.ndarray, bins: int = 8):
    """Medians of y in bins of x with equal counts (the trend line of residual plots)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 * bins:
        return np.array([]), np.array([])
    order = np.argsort(x)
    groups = np.array_split(order, bins)
    return (
        np.array([np.median(x[g]) for g in groups]),
        np.array([np.median(y[g]) for g in groups]),
    )


def residual_guides(ax) -> None:
    """Zero and +/-1.96 lines on a panel of standardised residuals."""
    ax.axhline(0, color="k", lw=0.8)
    for level in (-1.96, 1.96):
        ax.axhline(level, color="grey", ls=":", lw=0.8)
