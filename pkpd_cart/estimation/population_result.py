"""What a population fit returns: estimates, uncertainty, EBEs, diagnostics, shrinkage."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pkpd_cart.estimation.conditional import LOG_2PI
from pkpd_cart.estimation.outer import Layout
from pkpd_cart.estimation.population_objective import PopulationObjective
from pkpd_cart.model.population_model import PopulationModel


@dataclass
class PopulationFitResult:
    """Estimates, uncertainty, EBEs and diagnostics of a population fit.

    ``parameters`` has one row per theta, Omega element and sigma: ``estimate`` (Omega
    as variances/covariances, sigma as SDs), ``se``, ``rse_pct``, 95% limits (Wald; on the
    log scale for variances and SDs, ``ci_scale``), ``fixed``; Omega diagonals also carry
    ``sd`` and ``cv_pct`` (``100 sqrt(exp(w^2)-1)``, log-normal) and sigmas ``variance``
    (NONMEM's ``$SIGMA``).
    """

    population: PopulationModel
    method: str
    ofv: float
    n_observations: int
    n_censored: int
    n_subjects: int
    parameters: object = field(repr=False)  # DataFrame
    ebes: object = field(repr=False)  # DataFrame: ID, etas, ETC, OBJ
    individual: object = field(repr=False)  # DataFrame of individual parameters
    diagnostics: object = field(repr=False)  # DataFrame per record
    shrinkage: object = field(repr=False)  # DataFrame
    covariance: np.ndarray | None = field(repr=False)
    covariance_method: str | None = None
    correlation: np.ndarray | None = field(default=None, repr=False)
    eigenvalues: np.ndarray | None = field(default=None, repr=False)
    R: np.ndarray | None = field(default=None, repr=False)
    S: np.ndarray | None = field(default=None, repr=False)
    success: bool = True
    message: str = ""
    n_iterations: int = 0
    n_evaluations: int = 0
    n_failures: int = 0
    failure_messages: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    params: object = field(default=None, repr=False)  # lmfit.Parameters, natural scale
    synthetic: bool = False
    prior_ofv: float = 0.0  # -2 log of the priors at the estimates (MAP fits)

    @property
    def n_estimated(self) -> int:
        return int((~self.parameters["fixed"]).sum())

    @property
    def ofv_with_constant(self) -> float:
        """-2 log-likelihood including ``N log(2 pi)`` (N = uncensored observations)."""
        return self.ofv + (self.n_observations - self.n_censored) * LOG_2PI

    @property
    def aic(self) -> float:
        return self.ofv_with_constant + 2 * self.n_estimated

    @property
    def bic(self) -> float:
        return self.ofv_with_constant + self.n_estimated * math.log(self.n_observations)

    @property
    def condition_number(self) -> float | None:
        if self.eigenvalues is None or not len(self.eigenvalues):
            return None
        return float(self.eigenvalues.max() / self.eigenvalues.min())

    @property
    def theta(self) -> dict[str, float]:
        """The thetas by name (natural scale)."""
        return {n: th.value for n, th in self.population.thetas.items()}

    @property
    def omega(self) -> np.ndarray:
        """Omega (variances and covariances of the random effects)."""
        return np.array(self.population.omega, dtype=float)

    @property
    def sigma(self) -> dict[tuple[str, str], float]:
        """The residual-error SDs keyed ``(observable, name)``."""
        return dict(self.population.sigma_values())

    def summary(self) -> str:
        """A text table as a pharmacometrician reads it."""
        lines = [
            f"Population fit of '{self.population.name}' by {self.method}"
            + (" (SYNTHETIC data)" if self.synthetic else ""),
            f"OFV {self.ofv:.4f} (without N log 2pi); -2LL {self.ofv_with_constant:.4f}; "
            f"AIC {self.aic:.3f}; BIC {self.bic:.3f} ({self.n_estimated} estimated "
            f"parameters, {self.n_observations} observations, {self.n_subjects} subjects)",
            f"{'parameter':28s} {'estimate':>12s} {'SE':>11s} {'RSE%':>7s}",
        ]
        for r in self.parameters.itertuples():
            se = "fixed" if r.fixed else (f"{r.se:11.4g}" if np.isfinite(r.se) else "-")
            rse = "" if r.fixed or not np.isfinite(r.rse_pct) else f"{r.rse_pct:7.1f}"
            lines.append(f"{r.name:28s} {r.estimate:12.6g} {se:>11s} {rse:>7s}")
        if self.covariance_method:
            lines.append(
                f"covariance: {self.covariance_method}; condition number "
                f"{self.condition_number:.4g}"
            )
        if self.population.priors:
            lines.append(
                f"MAP with {len(self.population.priors)} prior(s): objective = OFV + "
                f"{self.prior_ofv:.4f} (-2 log prior)"
            )
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def assemble(
    objective: PopulationObjective, x, total, results, cov, R, S, cov_used, method
) -> PopulationFitResult:
    import pandas as pd

    layout = objective.layout
    pop = objective.pop
    theta, omega, sig = layout.parts(x)
    fitted = pop.with_values(
        theta=dict(zip(pop.thetas, theta)),
        omega=omega,
        sigma={e.index: x[k] for k, e in enumerate(layout.entries) if e.kind == "sigma"},
    )
    se = np.full(len(x), np.nan)
    corr = eig = None
    if cov is not None:
        d = np.sqrt(np.where(np.diag(cov) > 0, np.diag(cov), np.nan))
        se[layout.free] = d
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(d, d)
        if np.all(np.isfinite(corr)):
            eig = np.linalg.eigvalsh(corr)
    rows = []
    for k, e in enumerate(layout.entries):
        est = float(x[k])
        row = {
            "kind": e.kind,
            "name": e.name,
            "estimate": est,
            "se": se[k],
            "rse_pct": 100 * se[k] / abs(est) if est != 0 else np.nan,
            "lower_95": est - 1.959964 * se[k],
            "upper_95": est + 1.959964 * se[k],
            "ci_scale": "linear",
            "fixed": e.fixed,
            "sd": np.nan,
            "cv_pct": np.nan,
            "variance": np.nan,
            "se_variance": np.nan,
        }
        if e.kind == "omega" and e.index[0] == e.index[1]:
            row["sd"] = math.sqrt(est)
            row["cv_pct"] = 100 * math.sqrt(math.expm1(est))
            row["variance"] = est
            row["se_variance"] = se[k]
        if e.kind == "sigma":
            row["variance"] = est**2
            row["se_variance"] = 2 * est * se[k]
            row["sd"] = est
        positive = e.kind == "sigma" or (e.kind == "omega" and e.index[0] == e.index[1])
        if positive and est > 0:
            # Variances and SDs: the interval is built on the log scale (delta method). Over
            # 100 simulated replicates of 30 subjects it covered Omega 90-92% of the time,
            # the symmetric Wald interval 83-87% (fits/nlme_recovery.py)
            spread = math.exp(min(1.959964 * se[k] / est, 700.0)) if np.isfinite(se[k]) else np.nan
            row.update(lower_95=est / spread, upper_95=est * spread, ci_scale="log")
        rows.append(row)
    parameters = pd.DataFrame(rows)

    ctx = objective.context(x)
    etas = np.array([r.eta for r in results]).reshape(len(results), len(pop.etas))
    batch = objective.batch()
    F_i, V_i, G_i, bad_i = batch.predictions(ctx, etas)  # at the EBEs
    F_p, _, _, bad_p = batch.predictions(ctx, np.zeros_like(etas))  # population (eta = 0)
    covariates = np.array([s.covariates for s in objective.subjects]).reshape(len(etas), -1)
    with np.errstate(all="ignore"):
        P_i = pop.individual_matrix(ctx.theta, etas, covariates)[0]
    ebe_rows, ind_rows, diag_frames = [], [], []
    iwres_all = []
    for k, (subj, res) in enumerate(zip(objective.subjects, results)):
        etc = np.linalg.inv(res.information) if len(res.eta) else np.zeros((0, 0))
        row = {"ID": subj.id, **{n: res.eta[i] for i, n in enumerate(pop.etas)}}
        for i, a in enumerate(pop.etas):
            for j, b in enumerate(pop.etas[: i + 1]):
                row[f"ETC({a},{b})"] = etc[i, j]
        row["OBJ"] = res.obj
        ebe_rows.append(row)
        if bad_i[k] or bad_p[k]:  # a failed subject gets no diagnostics
            ind_rows.append({"ID": subj.id})
            continue
        ind_rows.append({"ID": subj.id, **dict(zip(pop.model.parameters, P_i[k]))})
        rows = batch.rec_subject == k
        f, V, G = F_i[rows], V_i[rows], G_i[rows]
        r = subj.y - f
        iwres = np.where(subj.censored, np.nan, r / np.sqrt(V))
        iwres_all.append(iwres[~subj.censored])
        # CWRES (Hooker et al. 2007): FOCE linearisation at eta_hat, V at eta_hat
        cpred = f - G @ res.eta
        unc = ~subj.censored
        cwres = np.full(len(r), np.nan)
        if unc.any():
            Gu = G[unc]
            C = Gu @ ctx.omega @ Gu.T + np.diag(V[unc])
            w, vecs = np.linalg.eigh(C)
            inv_sqrt = vecs @ np.diag(1 / np.sqrt(w)) @ vecs.T
            cwres[unc] = inv_sqrt @ (subj.y[unc] - cpred[unc])
        frame = subj.records[["ROW", "ID", "TIME", "DVID", "DV", "CENS", "LIMIT"]].copy()

        def natural(v: np.ndarray, logged: np.ndarray = subj.lognormal) -> np.ndarray:
            out = np.array(v, dtype=float)  # back from the log scale where it was used
            out[logged] = np.exp(out[logged])
            return out

        back = natural(f)
        frame["PRED"] = natural(F_p[rows])
        frame["IPRED"] = back
        frame["RES"] = frame["DV"] - frame["PRED"]
        frame["IRES"] = frame["DV"] - frame["IPRED"]
        frame["IWRES"] = iwres
        frame["CPRED"] = natural(cpred)
        frame["CWRES"] = cwres
        diag_frames.append(frame)
    ebes = pd.DataFrame(ebe_rows)
    individual = pd.DataFrame(ind_rows)
    diagnostics = pd.concat(diag_frames, ignore_index=True) if diag_frames else pd.DataFrame()
    shrink = []
    for i, n in enumerate(pop.etas):  # NONMEM's ETASHRINKSD: the sample SD (n - 1) of EBEs
        w = math.sqrt(omega[i, i])
        shrink.append(
            {
                "eta": n,
                "etabar": float(etas[:, i].mean()),
                "shrinkage_sd_pct": 100 * (1 - float(np.std(etas[:, i], ddof=1)) / w),
            }
        )
    if iwres_all:
        allw = np.concatenate(iwres_all)
        shrink.append(
            {
                "eta": "EPS (IWRES)",
                "etabar": float(np.mean(allw)),
                # EPSSHRINKSD: the root mean square of IWRES (about 0)
                "shrinkage_sd_pct": 100 * (1 - math.sqrt(float(np.mean(allw**2)))),
            }
        )
    n_obs = sum(len(s.y) for s in objective.subjects)
    n_cens = sum(int(s.censored.sum()) for s in objective.subjects)
    log_y = sum(s.log_y_sum for s in objective.subjects)
    return PopulationFitResult(
        population=fitted,
        method=method,
        ofv=total + 2 * log_y,
        n_observations=n_obs,
        n_censored=n_cens,
        n_subjects=len(objective.subjects),
        parameters=parameters,
        ebes=ebes,
        individual=individual,
        diagnostics=diagnostics,
        shrinkage=pd.DataFrame(shrink),
        covariance=cov,
        covariance_method=cov_used,
        correlation=corr,
        eigenvalues=eig,
        R=R,
        S=S,
    )


def lmfit_parameters(table, layout: Layout):
    """The estimates as ``lmfit.Parameters`` (natural scale, bounds, ``vary``, ``stderr``),
    the form the fixed-effects fit and lmfit users already read."""
    import re

    import lmfit

    params = lmfit.Parameters()
    for row, entry in zip(table.itertuples(), layout.entries):
        name = re.sub(r"\W+", "_", row.name).strip("_")
        lower = (
            entry.lower if entry.kind == "theta" else (0.0 if entry.kind == "sigma" else -np.inf)
        )
        if entry.kind == "omega" and entry.index[0] == entry.index[1]:
            lower = 0.0
        params.add(
            name,
            value=row.estimate,
            vary=not row.fixed,
            min=lower,
            max=entry.upper if entry.kind == "theta" else np.inf,
        )
        params[name].stderr = None if not np.isfinite(row.se) else float(row.se)
    return params
