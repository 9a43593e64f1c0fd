"""Every observation record of a population, flattened for numpy.

The EBE solver (:mod:`~pkpd_cart.estimation.conditional`), SAEM and the simulation-based
diagnostics (:mod:`~pkpd_cart.estimation.predictive`) all lay the records of their
subjects out the same way: one entry per record, with the row of its prediction in the
output of a :class:`~pkpd_cart.simulation.solver.BatchRun` of those subjects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RecordLayout:
    """Per record: ``subject`` (index into the subjects), ``row`` (into the BatchRun
    output), ``obs`` (observable index), ``y``, ``cens``, ``limit``, ``logn`` (log-normal
    observable); per subject: ``cov`` (covariates, (n_subjects, n_covariates))."""

    subject: np.ndarray
    row: np.ndarray
    obs: np.ndarray
    y: np.ndarray
    cens: np.ndarray
    limit: np.ndarray
    logn: np.ndarray
    cov: np.ndarray

    @classmethod
    def of(cls, subjects: Sequence, row_ptr: np.ndarray) -> RecordLayout:
        """The layout of ``subjects`` (:class:`~.conditional.SubjectData`) whose outputs
        start at ``row_ptr[i]`` in the BatchRun."""
        return cls(
            subject=np.concatenate(
                [np.full(len(s.y), i, dtype=np.int64) for i, s in enumerate(subjects)]
            ),
            row=np.concatenate([row_ptr[i] + s.t_index for i, s in enumerate(subjects)]),
            obs=np.concatenate([s.o_index for s in subjects]),
            y=np.concatenate([s.y for s in subjects]),
            cens=np.concatenate([s.censored for s in subjects]),
            limit=np.concatenate([s.limit for s in subjects]),
            logn=np.concatenate([s.lognormal for s in subjects]),
            cov=np.array([s.covariates for s in subjects], dtype=float).reshape(len(subjects), -1),
        )


def residual_variance(
    population,
    F: np.ndarray,
    O: np.ndarray,
    obs: np.ndarray,
    sigma: Mapping[tuple[str, str], float],
    select: np.ndarray | None = None,
) -> np.ndarray:
    """Residual variance of every record (NaN outside ``select``) from the population
    model's error models: ``F`` the prediction (log for log-normal observables), ``O``
    all observables of the record's row, ``obs`` the record's observable index,
    ``sigma`` the SDs keyed ``(observable, name)``."""
    compiled = population.compile()
    observables = list(population.model.observables)
    V = np.full_like(F, np.nan)
    for k, name in enumerate(observables):
        sel = obs == k
        if select is not None:
            sel = sel & select
        if not sel.any() or name not in compiled.variance:
            continue
        Vf = compiled.variance[name][0]
        sig = [sigma[(name, s)] for s in population.residuals[name].error_model.sigma_names]
        cols = [O[sel, m] for m in range(O.shape[1])]
        with np.errstate(all="ignore"):
            V[sel] = np.broadcast_to(np.asarray(Vf(F[sel], cols, sig), dtype=float), (sel.sum(),))
    return V
