"""Virtual populations: log-normal between-patient variability and batch simulation.

An individual's parameter is ``theta_i = theta_typical * exp(omega * eta_i)`` with
``eta_i ~ N(0, 1)`` (log-normal, as in NONMEM's ``THETA*EXP(ETA)``). Fixing the ``eta``
draws (a seeded generator) makes any summary of the population a smooth, reproducible
function of the typical values and the omegas, which is what a calibration needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pkpd_cart.errors import InputError, SimulationError
from pkpd_cart.modelling import Model
from pkpd_cart.simulate import Dose, SolverOptions, Trajectory, simulate


def standard_normal_draws(n: int, names: Sequence[str], seed: int) -> pd.DataFrame:
    """``n`` rows of independent N(0, 1) draws, one column per name (reproducible by seed)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.standard_normal((n, len(names))), columns=list(names))


def individual_parameters(
    model: Model,
    typical: Mapping[str, float],
    omega: Mapping[str, float],
    eta: pd.DataFrame,
) -> pd.DataFrame:
    """Parameter sets ``typical * exp(omega * eta)`` (one row per individual).

    Parameters not in ``typical`` take the model defaults; parameters not in ``omega``
    have no variability. Each individual value is clipped to the parameter's bounds.
    """
    base = model.parameter_values
    for name in [*typical, *omega]:
        if name not in base:
            raise InputError(f"model '{model.name}': unknown parameter '{name}'")
    base.update({k: float(v) for k, v in typical.items()})
    frame = pd.DataFrame({k: np.full(len(eta), v) for k, v in base.items()})
    for name, w in omega.items():
        if name not in eta:
            raise InputError(f"no eta column for parameter '{name}'")
        frame[name] = base[name] * np.exp(float(w) * eta[name].to_numpy())
    for name in omega:
        p = model.parameters[name]
        frame[name] = frame[name].clip(p.lower, p.upper)
    frame.index = eta.index
    return frame


@dataclass(frozen=True)
class PopulationRun:
    """Result of :func:`simulate_population`.

    Attributes
    ----------
    parameters : DataFrame
        The individual parameter sets (one row each).
    trajectories : dict
        Individual index -> :class:`~pkpd_cart.simulate.Trajectory`, for the successful runs.
    failures : dict
        Individual index -> the :class:`~pkpd_cart.SimulationError` message, for the rest.
    """

    parameters: pd.DataFrame
    trajectories: dict = field(repr=False)
    failures: dict

    @property
    def n_failed(self) -> int:
        return len(self.failures)


def simulate_population(
    model: Model,
    parameters: pd.DataFrame,
    times: Iterable[float],
    doses: Iterable[Dose] | Callable[[pd.Series], Iterable[Dose]] = (),
    options: SolverOptions | None = None,
    backend: str | None = None,
) -> PopulationRun:
    """Simulate every row of ``parameters``; failing members are reported, the rest kept.

    ``doses`` is one regimen for all, or a function of an individual's parameter row (and
    so of covariates stored there) returning its doses.
    """
    compiled = model.compile(backend)
    times = np.asarray(list(times), dtype=float)
    names = list(model.parameters)
    missing = [n for n in names if n not in parameters]
    full = parameters.copy()
    for n in missing:
        full[n] = model.parameters[n].value
    values = full[names].to_numpy(dtype=float)
    trajectories, failures = {}, {}
    fixed = None if callable(doses) else list(doses)
    for label, p, (_, row) in zip(full.index, values, full.iterrows()):
        regimen = fixed if fixed is not None else list(doses(row))
        try:
            trajectories[label] = simulate(
                model, times, params=p, doses=regimen, options=options, compiled=compiled
            )
        except SimulationError as exc:
            failures[label] = str(exc)
    return PopulationRun(full, trajectories, failures)


def observable_matrix(run: PopulationRun, observable: str) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, values)``: one row per successful individual, one column per time."""
    labels = np.array(list(run.trajectories))
    if not len(labels):
        return labels, np.empty((0, 0))
    first: Trajectory = next(iter(run.trajectories.values()))
    k = list(first.model.observables).index(observable)
    return labels, np.vstack([tr.observables[:, k] for tr in run.trajectories.values()])
