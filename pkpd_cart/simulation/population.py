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
from pkpd_cart.model.modelling import Model
from pkpd_cart.simulation.solver import Dose, SolverOptions, Trajectory, simulate


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
class Population:
    """A population to draw virtual patients from.

    Attributes
    ----------
    typical : mapping
        Typical values (others: model defaults).
    omega : mapping
        SD of the log-normal between-patient variability per parameter.
    covariates : mapping
        Covariate name -> ``(mean, sd, lower, upper)`` of a truncated normal (e.g. body
        weight ``"WT": (65, 12, 40, 120)``); drawn per patient and stored in its row, where
        a dose function can use it.
    """

    typical: Mapping[str, float] = field(default_factory=dict)
    omega: Mapping[str, float] = field(default_factory=dict)
    covariates: Mapping[str, tuple[float, float, float, float]] = field(default_factory=dict)

    def draw(self, model: Model, n: int, seed: int) -> pd.DataFrame:
        """``n`` patients: parameters and covariates (reproducible by ``seed``)."""
        rng = np.random.default_rng(seed)
        eta = pd.DataFrame(rng.standard_normal((n, len(self.omega))), columns=list(self.omega))
        frame = individual_parameters(model, self.typical, self.omega, eta)
        for name, (mean, sd, lo, hi) in self.covariates.items():
            frame[name] = np.clip(mean + sd * rng.standard_normal(n), lo, hi)
        return frame


@dataclass(frozen=True)
class PopulationRun:
    """Result of :func:`simulate_population`.

    Attributes
    ----------
    parameters : DataFrame
        The individual parameter sets and covariates (one row each).
    trajectories : dict
        Individual index -> :class:`~pkpd_cart.simulation.solver.Trajectory`, for the
        successful runs.
    failures : dict
        Individual index -> the :class:`~pkpd_cart.SimulationError` message, for the rest.
    """

    parameters: pd.DataFrame
    trajectories: dict = field(repr=False)
    failures: dict

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    def to_frame(self) -> pd.DataFrame:
        """Long table: ``id``, ``time``, states and observables of every successful patient."""
        frames = []
        for label, traj in self.trajectories.items():
            frame = traj.to_frame()
            frame.insert(0, "id", label)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _simulate_chunk(task) -> tuple[dict, dict]:
    """Simulate one chunk of patients; returns compact arrays (not Trajectory objects, which
    would carry the whole symbolic model back from a worker)."""
    model, labels, values, rows, times, doses, options, backend = task
    compiled = model.compile(backend)
    results, failures = {}, {}
    for label, p, row in zip(labels, values, rows):
        regimen = doses if not callable(doses) else list(doses(row))
        try:
            traj = simulate(
                model, times, params=p, doses=regimen, options=options, compiled=compiled
            )
            results[label] = (traj.states, traj.observables, traj.switch_flags)
        except SimulationError as exc:
            failures[label] = str(exc)
    return results, failures


@dataclass(frozen=True)
class PerKgDose:
    """A picklable dose function: ``amount_per_kg * row[covariate]`` into ``target``.

    Use it as ``doses=`` of :func:`simulate_population` when patients differ in weight.
    """

    amount_per_kg: float
    target: str
    time: float = 0.0
    covariate: str = "WT"

    def __call__(self, row) -> list[Dose]:
        return [Dose(self.time, self.amount_per_kg * float(row[self.covariate]), self.target)]


def simulate_population(
    model: Model,
    parameters: pd.DataFrame | int,
    times: Iterable[float],
    doses: Iterable[Dose] | Callable[[pd.Series], Iterable[Dose]] = (),
    options: SolverOptions | None = None,
    backend: str | None = None,
    population: Population | None = None,
    seed: int = 0,
    executor=None,
    chunk_size: int = 250,
) -> PopulationRun:
    """Simulate many patients; failing members are reported, the rest kept.

    Parameters
    ----------
    parameters : DataFrame or int
        Individual parameter sets (columns: parameter names and covariates), or a number
        of patients to draw from ``population`` with ``seed``.
    doses : doses for all, or a function of a patient's row (parameters and covariates,
        e.g. ``WT``) returning its doses.
    executor : None (this process), a number of local processes, a Dask ``Client`` or a
        scheduler address (see :mod:`pkpd_cart.simulation.executor`).
    """
    from pkpd_cart.simulation.executor import get_executor

    if isinstance(parameters, (int, np.integer)):
        parameters = (population or Population()).draw(model, int(parameters), seed)
    times = np.asarray(list(times), dtype=float)
    names = list(model.parameters)
    full = parameters.copy()
    for n in names:
        if n not in full:
            full[n] = model.parameters[n].value
    values = full[names].to_numpy(dtype=float)
    fixed = None if callable(doses) else list(doses)
    labels = list(full.index)
    rows = [row for _, row in full.iterrows()] if callable(doses) else [None] * len(labels)
    model.compile(backend)  # compile (and cache on disk) once, before any worker starts
    tasks = [
        (
            model,
            labels[i : i + chunk_size],
            values[i : i + chunk_size],
            rows[i : i + chunk_size],
            times,
            fixed if fixed is not None else doses,
            options,
            backend,
        )
        for i in range(0, len(labels), chunk_size)
    ]
    position = {label: i for i, label in enumerate(labels)}
    trajectories, failures = {}, {}
    for arrays, fail in get_executor(executor).map(_simulate_chunk, tasks):
        for label, (states, observables, flags) in arrays.items():
            trajectories[label] = Trajectory(
                model, times, states, observables, flags, values[position[label]]
            )
        failures.update(fail)
    return PopulationRun(full, trajectories, failures)


def observable_matrix(run: PopulationRun, observable: str) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, values)``: one row per successful individual, one column per time."""
    labels = np.array(list(run.trajectories))
    if not len(labels):
        return labels, np.empty((0, 0))
    first: Trajectory = next(iter(run.trajectories.values()))
    k = list(first.model.observables).index(observable)
    return labels, np.vstack([tr.observables[:, k] for tr in run.trajectories.values()])
