"""Simulation-based diagnostics of a population model: VPC, prediction-corrected VPC and
NPDE, for FOCE-family and SAEM fits alike (any :class:`PopulationModel` with values).

* :func:`simulate_design` draws replicates of a dataset's observation records: new random
  effects ``eta ~ N(0, Omega)`` per subject, the subject's doses, covariates and times,
  and residual errors from the error models (log-normal observables on the data scale).
* :func:`vpc`: observed 5th/50th/95th percentiles per time bin against the prediction
  intervals of the same percentiles over the replicates (Bergstrand et al. 2011, AAPS J
  13:143), optionally prediction-corrected, with the fraction below the LLOQ per bin.
* :func:`npde`: normalised prediction distribution errors (Brendel et al. 2006, Pharm Res
  23:2036): each subject's observations and replicates decorrelated with the Cholesky
  factor of the replicates' covariance; records below the LLOQ imputed from the
  predictive distribution below the limit first, as the npde package does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pkpd_cart.data.dataset import Dataset
from pkpd_cart.errors import InputError
from pkpd_cart.estimation.population_objective import subjects_from_dataset
from pkpd_cart.estimation.records import RecordLayout, residual_variance
from pkpd_cart.model.population_model import PopulationModel
from pkpd_cart.simulation.solver import BatchRun, SolverOptions


@dataclass
class Replicates:
    """``simulated`` (n, n_records) on the data scale; per record: subject id, time,
    observable, observed value (NaN if censored), LLOQ (NaN if none), and PRED (the
    prediction at eta = 0 without residual error)."""

    simulated: np.ndarray
    subject: np.ndarray
    time: np.ndarray
    observable: np.ndarray
    observed: np.ndarray
    censored: np.ndarray
    limit: np.ndarray
    pred: np.ndarray
    synthetic: bool = False


def simulate_design(
    population: PopulationModel,
    data: Dataset,
    n: int = 200,
    seed: int = 0,
    solver: SolverOptions | None = None,
) -> Replicates:
    """``n`` replicates of ``data``'s observation records under ``population``."""
    if n < 2:
        raise InputError(f"simulate_design: n must be >= 2 (got {n})")
    pop = population
    subjects = subjects_from_dataset(pop, data)
    model = pop.model
    observables = list(model.observables)
    batch = BatchRun(
        model.compile(), [(s.times, s.doses) for s in subjects], solver or SolverOptions()
    )
    lay = RecordLayout.of(subjects, batch.row_ptr)
    rec_row, rec_sub, rec_obs, logn = lay.row, lay.subject, lay.obs, lay.logn
    cens, y, limit, cov = lay.cens, lay.y, lay.limit, lay.cov
    theta = pop.theta_vector()
    sigma = pop.sigma_values()
    rng = np.random.default_rng(seed)
    all_subjects = np.arange(len(subjects))

    def predict(eta):
        P, _ = pop.individual_matrix(theta, eta, cov)
        OBS, _, status = batch.run(P, all_subjects)
        if np.any(status != 0):
            bad = subjects[int(np.flatnonzero(status)[0])].id
            raise InputError(f"simulate_design: subject {bad} could not be simulated")
        O = OBS[rec_row]
        return O, O[np.arange(len(y)), rec_obs]

    n_eta = len(pop.etas)
    _, pred = predict(np.zeros((len(subjects), n_eta)))
    chol = np.linalg.cholesky(pop.omega) if n_eta else np.zeros((0, 0))
    out = np.empty((n, len(y)))
    with np.errstate(all="ignore"):
        for r in range(n):
            eta = rng.standard_normal((len(subjects), n_eta)) @ chol.T
            O, f = predict(eta)
            F = np.where(logn, np.log(np.maximum(f, 1e-300)), f)
            V = residual_variance(pop, F, O, rec_obs, sigma)
            sim = F + np.sqrt(V) * rng.standard_normal(len(y))
            out[r] = np.where(logn, np.exp(sim), sim)
    observed = np.where(cens, np.nan, np.where(logn, np.exp(y), y))
    frame = data.frame
    return Replicates(
        simulated=out,
        subject=np.array([subjects[i].id for i in rec_sub]),
        time=np.concatenate([s.times[s.t_index] for s in subjects]),
        observable=np.array([observables[k] for k in rec_obs]),
        observed=observed,
        censored=cens,
        limit=np.where(logn & cens, np.exp(limit), limit),
        pred=pred,
        synthetic=bool("SYNTHETIC" in frame and (frame["SYNTHETIC"] == 1).any()),
    )


@dataclass
class Vpc:
    """A (prediction-corrected) VPC of one observable: per bin, the observed percentiles
    and the median and interval of the same percentiles over the replicates."""

    observable: str
    edges: np.ndarray
    bin_time: np.ndarray
    percentiles: tuple[float, ...]
    observed: np.ndarray  # (bins, percentiles)
    simulated: np.ndarray  # (bins, percentiles, 3): lower, median, upper
    blq_observed: np.ndarray  # (bins,) fraction of records below the LLOQ
    blq_simulated: np.ndarray  # (bins, 3)
    prediction_corrected: bool = False
    synthetic: bool = False
    n: int = 0

    def to_frame(self):
        """One row per bin: its edges and median time, and per percentile the observed
        value and the simulated interval (lower, median, upper); then the fraction below
        the LLOQ, observed and simulated."""
        import pandas as pd

        frame = pd.DataFrame(
            {"bin_low": self.edges[:-1], "bin_high": self.edges[1:], "time": self.bin_time}
        )
        for j, q in enumerate(self.percentiles):
            frame[f"observed_p{q:g}"] = self.observed[:, j]
            for k, part in enumerate(("lower", "median", "upper")):
                frame[f"simulated_p{q:g}_{part}"] = self.simulated[:, j, k]
        frame["blq_observed"] = self.blq_observed
        for k, part in enumerate(("lower", "median", "upper")):
            frame[f"blq_simulated_{part}"] = self.blq_simulated[:, k]
        return frame

    def plot(self, path=None, unit: str = ""):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax, axb) = plt.subplots(
            2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
        for j, q in enumerate(self.percentiles):
            lo, mid, hi = self.simulated[:, j].T
            ax.fill_between(self.bin_time, lo, hi, alpha=0.25, color="C0" if q == 50 else "C1")
            ax.plot(self.bin_time, mid, color="C0" if q == 50 else "C1", lw=1, ls="--")
            ax.plot(self.bin_time, self.observed[:, j], color="k", lw=1.5 if q == 50 else 1)
        kind = "pcVPC" if self.prediction_corrected else "VPC"
        label = " SYNTHETIC DATA" if self.synthetic else ""
        ax.set_title(f"{kind} of {self.observable}{label} ({self.n} replicates)")
        ax.set_ylabel(f"{self.observable} ({unit})" if unit else self.observable)
        lo, mid, hi = self.blq_simulated.T
        axb.fill_between(self.bin_time, lo, hi, alpha=0.3, color="C2")
        axb.plot(self.bin_time, self.blq_observed, color="k")
        axb.set_ylabel("fraction < LLOQ")
        axb.set_xlabel("time")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def vpc(
    replicates: Replicates,
    observable: str,
    bins: int | np.ndarray = 8,
    percentiles: tuple[float, ...] = (5.0, 50.0, 95.0),
    interval: float = 90.0,
    prediction_corrected: bool = False,
) -> Vpc:
    """VPC of ``observable`` from :func:`simulate_design` replicates. ``bins``: a number
    of bins with equal numbers of records (default 8), or the bin edges."""
    r = replicates
    sel = r.observable == observable
    if not sel.any():
        raise InputError(f"vpc: no records of observable '{observable}'")
    time = r.time[sel]
    if np.isscalar(bins):
        edges = np.unique(np.quantile(time, np.linspace(0, 1, int(bins) + 1)))
    else:
        edges = np.asarray(bins, dtype=float)
    which = np.clip(np.searchsorted(edges, time, side="right") - 1, 0, len(edges) - 2)
    obs = r.observed[sel].copy()
    sims = r.simulated[:, sel].copy()
    limit = r.limit[sel]
    if prediction_corrected:  # Bergstrand 2011: y * median(PRED in bin) / PRED
        pred = r.pred[sel]
        for b in range(len(edges) - 1):
            inbin = which == b
            if inbin.any():
                # a record predicted exactly 0 (CAR-T cells before the infusion) is
                # corrected to 0, as tidyvpc does, rather than to nan by 0/0
                factor = np.divide(
                    np.median(pred[inbin]),
                    pred[inbin],
                    out=np.zeros(int(inbin.sum())),
                    where=pred[inbin] != 0,
                )
                obs[inbin] *= factor
                sims[:, inbin] *= factor
    alpha = (100 - interval) / 2
    n_bins = len(edges) - 1
    observed = np.full((n_bins, len(percentiles)), np.nan)
    simulated = np.full((n_bins, len(percentiles), 3), np.nan)
    blq_obs = np.zeros(n_bins)
    blq_sim = np.zeros((n_bins, 3))
    bin_time = np.zeros(n_bins)
    for b in range(n_bins):
        inbin = which == b
        bin_time[b] = np.median(time[inbin]) if inbin.any() else np.nan
        if not inbin.any():
            continue
        o = obs[inbin]
        if np.isfinite(o).any():
            observed[b] = np.nanpercentile(o, percentiles)
        per_rep = np.percentile(sims[:, inbin], percentiles, axis=1)  # (p, n)
        simulated[b] = np.stack(
            [np.percentile(per_rep, q, axis=1) for q in (alpha, 50, 100 - alpha)], axis=1
        )
        lim = limit[inbin]
        has = np.isfinite(lim)
        blq_obs[b] = np.mean(r.censored[sel][inbin])
        frac = np.mean(np.where(has, sims[:, inbin] < lim, False), axis=1)
        blq_sim[b] = np.percentile(frac, [alpha, 50, 100 - alpha])
    return Vpc(
        observable, edges, bin_time, tuple(percentiles), observed, simulated, blq_obs, blq_sim,
        prediction_corrected, r.synthetic, r.simulated.shape[0],
    )  # fmt: skip


def npde(replicates: Replicates, seed: int = 0):
    """NPDE of every record (a DataFrame: ID, TIME, DVID, DV, PD, NPDE)."""
    import pandas as pd
    from scipy.stats import norm

    r = replicates
    rng = np.random.default_rng(seed)
    K = r.simulated.shape[0]
    y = r.observed.copy()
    for j in np.flatnonzero(r.censored):  # impute from the predictive distribution below LLOQ
        below = np.mean(r.simulated[:, j] < r.limit[j])
        y[j] = np.quantile(r.simulated[:, j], rng.uniform(0, max(below, 1.0 / K)))
    pd_values = np.empty(len(y))
    for sid in dict.fromkeys(r.subject):
        idx = np.flatnonzero(r.subject == sid)
        sims = r.simulated[:, idx]
        mean = sims.mean(axis=0)
        cov = np.atleast_2d(np.cov(sims, rowvar=False))
        try:
            L = np.linalg.cholesky(cov + 1e-12 * np.trace(cov) / len(idx) * np.eye(len(idx)))
        except np.linalg.LinAlgError:
            L = np.diag(np.sqrt(np.maximum(np.diag(cov), 1e-300)))
        obs_d = np.linalg.solve(L, y[idx] - mean)
        sims_d = np.linalg.solve(L, (sims - mean).T).T
        pd_values[idx] = np.mean(sims_d < obs_d, axis=0)
    pd_values = np.clip(pd_values, 1.0 / (2 * K), 1 - 1.0 / (2 * K))
    return pd.DataFrame(
        {
            "ID": r.subject, "TIME": r.time, "DVID": r.observable, "DV": r.observed,
            "CENS": r.censored.astype(int), "PD": pd_values, "NPDE": norm.ppf(pd_values),
        }
    )  # fmt: skip
