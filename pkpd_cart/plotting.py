"""Figures drawn by the package (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pkpd_cart.modelling import Model  # noqa: E402


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
