"""The OFV of a population model over all subjects, as a function of the natural parameters.

:func:`subjects_from_dataset` turns a dataset into per-subject records (covariates checked);
:class:`PopulationObjective` evaluates the OFV with EBE warm starts, one point at a time or
many at once through the package's executor or a worker pool forked once per fit.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Sequence

import numpy as np

from pkpd_cart.data.dataset import Dataset, subject_records
from pkpd_cart.errors import DatasetError, FitError
from pkpd_cart.estimation.conditional import (
    BatchConditional,
    Context,
    SubjectData,
    SubjectObjective,
    SubjectResult,
)
from pkpd_cart.estimation.outer import Layout
from pkpd_cart.model.population_model import PopulationModel
from pkpd_cart.simulation.solver import SolverOptions


def subjects_from_dataset(pop: PopulationModel, dataset: Dataset) -> list[SubjectData]:
    """Per-subject records; covariates checked (present, numeric, constant per subject)."""
    model = pop.model
    if dataset.converted_to != model.name:
        dataset = dataset.for_model(model)
    frame = dataset.frame
    for c in pop.covariates:
        if c not in frame:
            raise DatasetError(
                f"{dataset.source}: column {c}: covariate of population model '{pop.name}' "
                "is missing from the dataset"
            )
    obs = dataset.observations()
    used = sorted(set(obs["DVID"]))
    missing = [o for o in used if o not in pop.residuals]
    if missing:
        raise FitError(
            f"population model '{pop.name}': no residual error model for observable(s) "
            f"{', '.join(missing)} (use pop.error(name, ErrorModel...))"
        )
    layouts = {r.id: r for r in subject_records(dataset, list(model.observables))}
    rows_by_subject = dict(tuple(frame.groupby("ID", sort=False)))
    subjects = []
    for sid in dataset.subjects:
        rows = rows_by_subject[sid]
        covs = []
        for c in pop.covariates:
            values = rows[c].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                raise DatasetError(
                    f"{dataset.source}: row {int(rows['ROW'].iloc[0])}, column {c}: subject "
                    f"{sid} has no value of covariate {c}"
                )
            if np.any(finite != finite[0]):
                bad = rows.iloc[int(np.argmax(np.isfinite(values) & (values != finite[0])))]
                raise DatasetError(
                    f"{dataset.source}: row {int(bad['ROW'])}, column {c}: covariate {c} "
                    f"varies within subject {sid} ({finite[0]:g}, {float(bad[c]):g}); it must "
                    "be constant within a subject"
                )
            covs.append(float(finite[0]))
        lay = layouts.get(sid)
        if lay is None:
            continue
        rec, cens, y, lim = lay.records, lay.censored, lay.y, lay.limit
        logn = np.array([pop.residuals[d].error_model.kind == "lognormal" for d in rec["DVID"]])
        if np.any(logn & ~cens & ~(y > 0)):
            bad = rec[logn & ~cens & ~(y > 0)].iloc[0]
            raise DatasetError(
                f"{dataset.source}: row {int(bad['ROW'])}, column DV: {bad['DV']:g} is not "
                f"positive, but '{bad['DVID']}' has a log-normal error model"
            )
        log_y_sum = float(np.sum(np.log(y[logn & ~cens])))
        y = np.where(logn & ~cens, np.log(np.where(y > 0, y, 1.0)), y)
        lim = np.where(logn & cens, np.log(np.where(lim > 0, lim, 1.0)), lim)
        subjects.append(
            SubjectData(
                sid,
                lay.times,
                lay.t_index,
                lay.o_index,
                y,
                cens,
                lim,
                log_y_sum,
                logn,
                lay.doses,
                np.array(covs),
                rec,
            )
        )
    if not subjects:
        raise FitError(f"no observations to fit in {dataset.source}")
    return subjects


class PopulationObjective:
    """The OFV as a function of the natural parameters, with EBE warm starts."""

    def __init__(
        self,
        pop: PopulationModel,
        subjects: list[SubjectData],
        method: str,
        options: SolverOptions,
        executor=None,
    ):
        self.pop = pop
        self.layout = Layout(pop)
        self.subjects = subjects
        self.method = method
        self.options = options
        self.executor = executor
        self.subject_objective = SubjectObjective(pop, options)
        self.etas = np.zeros((len(subjects), len(pop.etas)))
        self.n_evaluations = 0
        self.failures = 0
        self.failure_messages: list[str] = []
        self._pool: _ForkedPool | None = None

    def context(self, x: np.ndarray) -> Context:
        theta, omega, sig = self.layout.parts(x)
        if len(omega):
            L = np.linalg.cholesky(omega)  # LinAlgError: not positive definite
            inv = np.linalg.inv(omega)
            logdet = 2 * float(np.sum(np.log(np.diag(L))))
        else:
            inv, logdet = omega, 0.0
        return Context(theta, omega, inv, logdet, sig, self.method)

    def evaluate(
        self, x: np.ndarray, etas: np.ndarray | None = None
    ) -> tuple[float, list[SubjectResult]]:
        """Total OFV and per-subject results at natural ``x`` (EBEs from ``etas``)."""
        self.n_evaluations += 1
        try:
            ctx = self.context(x)
        except np.linalg.LinAlgError:
            return math.inf, []
        start = self.etas if etas is None else etas
        results = self.batch().solve(ctx, start, self.subject_objective.inner_tolerance)
        self.last_prior = self.prior(x)
        for r in results:
            if r.failed:
                self.failures += 1
                if len(self.failure_messages) < 20:
                    self.failure_messages.append(r.failed)
        total = float(sum(r.obj for r in results))
        return total, results

    def prior(self, x: np.ndarray) -> float:
        """``-2 log`` of the population model's priors at natural ``x`` (0 without)."""
        if not self.pop.priors:
            return 0.0
        from pkpd_cart.estimation.priors import penalty

        theta, omega, _ = self.layout.parts(x)
        return penalty(self.pop, theta, omega)

    def batch(self) -> BatchConditional:
        """The solver of every subject's conditional problem (built on first use)."""
        if getattr(self, "_batch", None) is None:
            self._batch = BatchConditional(self.subject_objective, self.subjects)
        return self._batch

    def evaluate_many(self, points: Sequence[np.ndarray], etas) -> list:
        """Per-subject OBJ arrays and EBEs at several points (through the executor);
        ``etas``: the warm start of all points, or a list with one per point."""
        from pkpd_cart.simulation.executor import LocalExecutor, get_executor

        ex = get_executor(self.executor)
        tol = self.subject_objective.inner_tolerance
        starts = etas if isinstance(etas, list) else [etas] * len(points)
        if isinstance(ex, LocalExecutor) and "fork" in mp.get_all_start_methods():
            if self._pool is None:
                self._pool = _ForkedPool(self, ex.workers)
            out = self._pool.map([(x, e, tol) for x, e in zip(points, starts)])
        else:
            out = ex.map(_evaluate_task, [(self, x, e) for x, e in zip(points, starts)])
        if ex.workers > 1:  # evaluations in other processes are not counted there
            self.n_evaluations += len(points)
        return out

    def evaluate_pairs(
        self, plus: Sequence[np.ndarray], minus: Sequence[np.ndarray], etas: np.ndarray
    ) -> tuple[list, list]:
        """Points symmetric about the current one: the ``plus`` points first, then each
        ``minus`` point warm-started from ``2 eta - eta(plus)``, which is off its EBEs by
        O(h^2) only (measured on ACOP: 10 -> 7 simulations per subject and gradient
        direction)."""
        up = self.evaluate_many(plus, etas)
        down = self.evaluate_many(minus, [2 * etas - e for _, e in up])
        return up, down

    def close(self) -> None:
        """Stop the worker processes of this fit, if any."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __getstate__(self) -> dict:  # for Dask: compiled pieces are rebuilt on arrival
        state = dict(self.__dict__)
        state.pop("_batch", None)
        state["_pool"] = None
        state["executor"] = None  # a worker evaluates its points itself
        return state


_WORKER_OBJECTIVE: PopulationObjective | None = None  # inherited by forked workers


def _forked_task(task):
    x, etas, tol = task
    objective = _WORKER_OBJECTIVE
    objective.subject_objective.inner_tolerance = tol
    return _evaluate_task((objective, x, etas))


def _worker_start() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # the workers already use the cores


class _ForkedPool:
    """Worker processes forked once per fit. Each inherits the objective (compiled model,
    packed records), so a task carries only a point, the warm-start EBEs and the inner
    tolerance. (The package's LocalExecutor forks a new pool per map, which costs more
    than a gradient of a small model: pheno and ACOP took as long on 2 processes as on 1.)
    """

    def __init__(self, objective: PopulationObjective, workers: int):
        from concurrent.futures import ProcessPoolExecutor

        global _WORKER_OBJECTIVE
        _WORKER_OBJECTIVE = objective
        objective.batch()  # built before the fork, shared by the workers
        self.pool = ProcessPoolExecutor(
            workers, mp_context=mp.get_context("fork"), initializer=_worker_start
        )

    def map(self, tasks: list) -> list:
        return list(self.pool.map(_forked_task, tasks))

    def close(self) -> None:
        self.pool.shutdown()


def _evaluate_task(task):
    objective, x, etas = task
    total, results = objective.evaluate(x, etas)
    if not results:
        return np.full(len(objective.subjects), math.inf), etas
    return np.array([r.obj for r in results]), np.array([r.eta for r in results])
