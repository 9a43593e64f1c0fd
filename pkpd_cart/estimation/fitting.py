"""Maximum-likelihood fits of a model to a dataset with lmfit and exact gradients.

``fit(model, dataset, estimate=[...], per_subject=[...], error_models={...})`` estimates
model parameters shared by all subjects (``estimate``), parameters with one value per
subject (``per_subject``), and the residual-error sigmas, by minimising the -2
log-likelihood (OFV) with lmfit's ``least_squares`` (trust-region reflective). The
residual Jacobian comes from the compiled forward sensitivities (see
:mod:`pkpd_cart.estimation.likelihood` for the residual form), so each iteration costs one
simulation per subject instead of one per parameter.

Positive parameters are estimated on the log scale; a solver failure at trial parameters
returns a penalty (counted and reported) instead of stopping the fit.
"""

from __future__ import annotations

import math
import re
import time
import warnings as _warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import lmfit
import numpy as np
import pandas as pd

from pkpd_cart.data.dataset import Dataset, SubjectRecords, subject_records
from pkpd_cart.errors import FitError, SimulationError
from pkpd_cart.estimation.likelihood import (
    ErrorModel,
    mills_ratio,
    minus2ll_censored,
    minus2ll_observed,
)
from pkpd_cart.model.modelling import Model
from pkpd_cart.simulation.solver import SolverOptions, simulate

PENALTY = 1e3  # residual value returned for every record when a simulation fails
DEFAULT_OPTIONS = SolverOptions(rtol=1e-7, atol=1e-8)


def _safe(text: str) -> str:
    return re.sub(r"\W", "_", str(text))


@dataclass(frozen=True)
class ParameterSpec:
    """One estimated quantity (an lmfit parameter).

    ``kind`` is ``"model"`` (a model parameter, shared or for one subject) or ``"sigma"``.
    ``log`` says whether the lmfit value is the natural log of the quantity.
    """

    name: str  # lmfit name
    quantity: str  # model parameter name, or "<observable>:<add|prop|log>"
    kind: str
    subject: str | None  # None: shared by all subjects
    log: bool
    unit: str
    initial: float  # natural scale
    lower: float
    upper: float

    def to_internal(self, value: float) -> float:
        return math.log(value) if self.log else value

    def to_natural(self, value: float) -> float:
        return math.exp(value) if self.log else value


class Problem:
    """The likelihood of a dataset under a model: residuals, Jacobian, OFV, information."""

    def __init__(
        self,
        model: Model,
        dataset: Dataset,
        estimate: Sequence[str] = (),
        per_subject: Sequence[str] = (),
        error_models: Mapping[str, ErrorModel] | None = None,
        fixed: Mapping[str, float] | None = None,
        blq: str = "M3",
        subjects: Sequence[str] | None = None,
        options: SolverOptions = DEFAULT_OPTIONS,
        initial: Mapping[str, float] | None = None,
    ):
        self.model = model
        self.options = options
        self.blq = blq
        # one name given as a string means that name, not its letters
        estimate = [estimate] if isinstance(estimate, str) else list(estimate)
        per_subject = [per_subject] if isinstance(per_subject, str) else list(per_subject)
        if blq not in ("M3", "M1"):
            raise FitError(f"blq must be 'M3' or 'M1', not {blq!r}")
        if dataset.converted_to != model.name:
            dataset = dataset.for_model(model)
        self.dataset = dataset
        # "name[subject]" keys fix a parameter for one subject (e.g. a measured baseline)
        fixed = dict(fixed or {})
        self.fixed_per_subject: dict[str, dict[str, float]] = {}
        for key in [k for k in fixed if "[" in k]:
            name, _, rest = key.partition("[")
            sid = rest.rstrip("]")
            if not rest.endswith("]") or sid not in dataset.subjects:
                raise FitError(
                    f"fixed value {key!r}: not NAME[SUBJECT] with a subject of {dataset.source}"
                )
            if name not in model.parameters:
                raise FitError(f"model '{model.name}' has no parameter '{name}'")
            if name in set(estimate) | set(per_subject):
                raise FitError(f"parameter {name} is both estimated and fixed (for {sid})")
            value = model.checked_value(name, fixed.pop(key))
            self.fixed_per_subject.setdefault(sid, {})[name] = value
        for name in [*estimate, *per_subject, *fixed]:
            if name not in model.parameters:
                raise FitError(f"model '{model.name}' has no parameter '{name}'")
        overlap = set(estimate) & set(per_subject)
        if overlap:
            raise FitError(
                f"parameter(s) {', '.join(sorted(overlap))} cannot be both shared and per subject"
            )
        both = (set(estimate) | set(per_subject)) & set(fixed or {})
        if both:
            raise FitError(f"parameter(s) {', '.join(sorted(both))} are both estimated and fixed")
        self.base = model.resolve_parameters(dict(fixed or {}))
        self.compiled = model.compile()
        obs_names = list(model.observables)
        ids = [str(s) for s in (subjects or dataset.subjects)]
        unknown = [s for s in ids if s not in dataset.subjects]
        if unknown:
            raise FitError(f"subject(s) {', '.join(unknown)} not in {dataset.source}")
        obs = dataset.observations()
        used = sorted(set(obs.loc[obs["ID"].isin(ids), "DVID"]))
        error_models = error_models or {}
        missing = [o for o in used if o not in error_models]
        if missing:
            raise FitError(
                f"no error model for observable(s) {', '.join(missing)} (give "
                "error_models={name: ErrorModel...})"
            )
        unknown = [o for o in error_models if o not in model.observables]
        if unknown:
            raise FitError(
                f"error model for unknown observable(s) {', '.join(map(str, unknown))}; "
                f"observables of model '{model.name}': {', '.join(model.observables)}"
            )
        self.error_models = {o: error_models[o] for o in used}
        self.n_dropped_m1 = (
            int(((obs["CENS"] == 1) & obs["ID"].isin(ids)).sum()) if blq == "M1" else 0
        )
        self.subjects: list[SubjectRecords] = subject_records(
            dataset, obs_names, ids, drop_censored=blq == "M1"
        )
        if not self.subjects:
            raise FitError(f"no observations to fit in {dataset.source}")
        self.specs = self._specs(estimate, per_subject, dict(initial or {}))
        known = {s.quantity for s in self.specs} | {
            f"{s.quantity}[{s.subject}]" for s in self.specs if s.subject is not None
        }
        unknown = [k for k in dict(initial or {}) if k not in known]
        if unknown:
            raise FitError(
                f"initial value(s) for {', '.join(map(str, unknown))}, which the fit does not "
                f"estimate (it estimates: {', '.join(sorted(known))})"
            )
        self.n_records = sum(len(s.y) for s in self.subjects)
        self.n_censored = int(sum(s.censored.sum() for s in self.subjects))
        # residual floors: sigma is never below 1e-9 of the data's own scale
        self._cache_key: bytes | None = None
        self._cache: tuple | None = None
        self.n_failures = 0
        self.n_at_floor = 0
        self.failure_messages: list[str] = []
        self.n_simulations = 0

    # -- parameters ------------------------------------------------------------------
    def _specs(self, estimate, per_subject, initial) -> list[ParameterSpec]:
        specs = []

        def model_spec(name: str, subject: str | None) -> ParameterSpec:
            p = self.model.parameters[name]
            key = name if subject is None else f"{name}[{subject}]"
            value = float(
                initial.get(
                    key, initial.get(name, self.base[list(self.model.parameters).index(name)])
                )
            )
            log = p.scale == "log"
            lname = (
                ("log_" if log else "") + name + ("" if subject is None else f"__{_safe(subject)}")
            )
            return ParameterSpec(
                lname, name, "model", subject, log, p.unit, value, p.lower, p.upper
            )

        for name in estimate:
            specs.append(model_spec(name, None))
        for name in per_subject:
            for s in self.subjects:
                specs.append(model_spec(name, s.id))
        units = {o.name: o.unit for o in self.model.observables.values()}
        for obs, em in self.error_models.items():
            for key, value in em.initial.items():
                quantity = f"{obs}:{key}"
                unit = units[obs] if key == "add" else "1"
                specs.append(
                    ParameterSpec(
                        f"log_sigma_{_safe(obs)}_{key}",
                        quantity,
                        "sigma",
                        None,
                        True,
                        unit,
                        float(initial.get(quantity, value)),
                        1e-8,
                        1e8,
                    )
                )
        return specs

    def lmfit_parameters(self) -> lmfit.Parameters:
        params = lmfit.Parameters()
        for s in self.specs:
            lo = s.to_internal(s.lower) if (s.lower > 0 or not s.log) else -np.inf
            hi = s.to_internal(s.upper) if math.isfinite(s.upper) else np.inf
            value = s.to_internal(min(max(s.initial, s.lower), s.upper))
            params.add(s.name, value=value, min=lo, max=hi)
        return params

    def natural(self, x: np.ndarray) -> dict[str, float]:
        return {s.name: s.to_natural(v) for s, v in zip(self.specs, x)}

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, x: np.ndarray) -> tuple:
        """``(residuals, jacobian, ofv, fim)`` at internal parameter vector ``x`` (cached)."""
        x = np.asarray(x, dtype=float)
        key = x.tobytes()
        if key == self._cache_key:
            return self._cache
        out = self._evaluate(x)
        self._cache_key, self._cache = key, out
        return out

    def _subject_parameters(self, x: np.ndarray, sid: str):
        """Model parameter vector of a subject and the estimated columns affecting it."""
        p = self.base.copy()
        names = list(self.model.parameters)
        for name, value in self.fixed_per_subject.get(sid, {}).items():
            p[names.index(name)] = value
        columns = []  # (spec index, model parameter index)
        for k, s in enumerate(self.specs):
            if s.kind != "model" or (s.subject is not None and s.subject != sid):
                continue
            j = names.index(s.quantity)
            p[j] = s.to_natural(x[k])
            columns.append((k, j))
        return p, columns

    def _simulate(self, subj: SubjectRecords, p: np.ndarray, wrt: Sequence[str] = ()):
        """One subject at its observation times, with sensitivities to ``wrt`` if any."""
        return simulate(
            self.model,
            subj.times,
            params=p,
            doses=subj.doses,
            options=self.options,
            sensitivities=list(wrt) or False,
            compiled=self.compiled,
        )

    def residuals_only(self, x: np.ndarray) -> np.ndarray:
        """Residuals without sensitivities (for finite-difference comparisons)."""
        return self._evaluate(np.asarray(x, dtype=float), jacobian=False)[0]

    def _evaluate(self, x: np.ndarray, jacobian: bool = True):
        self.n_at_floor = 0  # records whose residual SD sits at its numerical floor
        nx = len(self.specs)
        sig_index = {s.quantity: k for k, s in enumerate(self.specs) if s.kind == "sigma"}
        sig = {q: math.exp(x[k]) for q, k in sig_index.items()}
        blocks_r, blocks_j = [], []
        ofv = 0.0
        fim = np.zeros((nx, nx))
        names = list(self.model.parameters)
        obs_names = list(self.model.observables)
        for subj in self.subjects:
            p, columns = self._subject_parameters(x, subj.id)
            wrt = [names[j] for _, j in columns] if jacobian else []
            self.n_simulations += 1
            try:
                traj = self._simulate(subj, p, wrt)
            except SimulationError as exc:
                self.n_failures += 1
                if len(self.failure_messages) < 20:
                    self.failure_messages.append(str(exc))
                n = 2 * len(subj.y)
                blocks_r.append(np.full(n, PENALTY))
                blocks_j.append(np.zeros((n, nx)))
                ofv += PENALTY**2 * n
                continue
            f = traj.observables[subj.t_index, subj.o_index]
            # d f / d internal parameter, for each record
            df = np.zeros((len(f), nx))
            for c, (k, _j) in enumerate(columns if jacobian else []):
                spec = self.specs[k]
                chain = spec.to_natural(x[k]) if spec.log else 1.0
                df[:, k] = traj.observable_sensitivities[subj.t_index, subj.o_index, c] * chain
            r, J, o, info = self._records(subj, f, df, sig, sig_index, obs_names)
            blocks_r.append(r)
            blocks_j.append(J)
            ofv += o
            fim += info
        return np.concatenate(blocks_r), np.vstack(blocks_j), ofv, fim

    def _records(self, subj, f, df, sig, sig_index, obs_names):
        """Residuals, Jacobian rows, OFV and expected information of one subject."""
        nx = len(self.specs)
        n = len(f)
        r_e = np.zeros(n)
        r_s = np.zeros(n)
        J_e = np.zeros((n, nx))
        J_s = np.zeros((n, nx))
        ofv = 0.0
        info = np.zeros((nx, nx))
        for obs, em in self.error_models.items():
            sel = subj.o_index == obs_names.index(obs)
            if not sel.any():
                continue
            fi, dfi, yi = f[sel], df[sel], subj.y[sel]
            cens, lim = subj.censored[sel], subj.limit[sel]
            par = {key: sig[f"{obs}:{key}"] for key in em.sigma_names}
            lognormal = em.kind == "lognormal"
            if lognormal:
                bad = (fi <= 0) & ~cens
                if bad.any():
                    raise_penalty = np.full(sel.sum(), PENALTY)
                    r_e[sel], r_s[sel] = raise_penalty, raise_penalty
                    ofv += 2 * PENALTY**2 * sel.sum()
                    continue
                safe_f = np.where(fi > 0, fi, 1e-300)
                mu, dmu = np.log(safe_f), dfi / safe_f[:, None]
                data = np.where(cens, np.log(lim), np.log(np.where(cens, 1.0, yi)))
            else:
                mu, dmu = fi, dfi
                data = np.where(cens, lim, yi)
            s, ds = em.sigma(fi, par)
            floor = 1e-9 * (np.abs(data) + 1.0) if not lognormal else np.full_like(s, 1e-9)
            self.n_at_floor += int(np.sum(s < floor))
            s = np.maximum(s, floor)
            # d sigma / d internal parameters
            dsig = ds["f"][:, None] * dfi
            for key in em.sigma_names:
                k = sig_index[f"{obs}:{key}"]
                dsig[:, k] += ds[key] * par[key]  # sigma params are on the log scale
            z = (data - mu) / s
            dz = -dmu / s[:, None] - (z / s)[:, None] * dsig
            idx = np.flatnonzero(sel)
            unc, cen = ~cens, cens
            # uncensored: e and sqrt(log s^2 - log floor^2)
            e = z[unc]
            r_e[idx[unc]] = e
            J_e[idx[unc]] = dz[unc]
            t = np.sqrt(np.maximum(2 * np.log(s[unc] / floor[unc]), 1e-300))
            r_s[idx[unc]] = t
            J_s[idx[unc]] = (1.0 / (t * s[unc]))[:, None] * dsig[unc]
            ofv += float(
                np.sum(
                    minus2ll_observed(
                        yi[unc], fi[unc] if not lognormal else fi[unc], s[unc], lognormal
                    )
                )
            )
            # expected Fisher information (normal: mean mu, sd s)
            g_mu, g_s = dmu[unc] / s[unc, None], dsig[unc] / s[unc, None]
            info += g_mu.T @ g_mu + 2 * g_s.T @ g_s
            # censored (M3): sqrt(-2 log Phi(z))
            if cen.any():
                zc = z[cen]
                m2 = minus2ll_censored(
                    lim[cen],
                    np.where(fi[cen] > 0, fi[cen], 1e-300) if lognormal else fi[cen],
                    s[cen],
                    lognormal,
                )
                rc = np.sqrt(np.maximum(m2, 1e-300))
                drc = (-mills_ratio(zc) / rc)[:, None] * dz[cen]
                r_e[idx[cen]] = rc
                J_e[idx[cen]] = drc
                ofv += float(np.sum(m2))
                info += drc.T @ drc
        return np.concatenate((r_e, r_s)), np.vstack((J_e, J_s)), ofv, info

    def predictions(self, x: np.ndarray) -> pd.DataFrame:
        """Records with population predictions ``PRED``, ``IWRES`` and error ``SIGMA``."""
        sig = {s.quantity: math.exp(v) for s, v in zip(self.specs, x) if s.kind == "sigma"}
        rows = []
        obs_names = list(self.model.observables)
        for subj in self.subjects:
            p, _ = self._subject_parameters(x, subj.id)
            traj = self._simulate(subj, p)
            f = traj.observables[subj.t_index, subj.o_index]
            frame = subj.records.copy()
            frame["PRED"] = f
            sigmas, iwres = [], []
            for fi, oi, yi, c in zip(f, subj.o_index, subj.y, subj.censored):
                em = self.error_models[obs_names[oi]]
                par = {key: sig[f"{obs_names[oi]}:{key}"] for key in em.sigma_names}
                s = float(em.sigma(np.array([fi]), par)[0][0])
                sigmas.append(s)
                if c:
                    iwres.append(np.nan)
                elif em.kind == "lognormal":
                    iwres.append((math.log(yi) - math.log(max(fi, 1e-300))) / s)
                else:
                    iwres.append((yi - fi) / s)
            frame["SIGMA"] = sigmas
            frame["IWRES"] = iwres
            rows.append(frame)
        return pd.concat(rows)

    def subject_parameters(self, x: np.ndarray, sid: str) -> dict[str, float]:
        p, _ = self._subject_parameters(x, sid)
        return dict(zip(self.model.parameters, p))


@dataclass
class FitResult:
    """A fit's estimates, uncertainty and diagnostics.

    Attributes
    ----------
    parameters : DataFrame
        One row per estimated quantity: ``name`` (lmfit), ``quantity``, ``subject``,
        ``estimate`` (natural scale), ``unit``, ``se`` (natural, delta method), ``rse_pct``
        (SE of the log estimate x 100 for log-scale parameters), Wald 95% CI on the
        natural scale (``ci_low``, ``ci_high``) and on the estimation scale
        (``estimate_internal``, ``se_internal``).
    ofv : float
        -2 log-likelihood at the estimates (with constants; M3 terms included).
    aic, bic : float
        ``ofv + 2 k`` and ``ofv + k log(n)`` (k estimated quantities, n records).
    covariance : ndarray or None
        Covariance of the internal estimates: inverse expected Fisher information.
    correlation : DataFrame or None
    condition_number : float
        Of the correlation matrix (large: poorly identifiable).
    starts : DataFrame
        Every start of a multi-start fit with its OFV (sorted; the waterfall plot).
    minimizer_result : lmfit.minimizer.MinimizerResult
        The best lmfit result, for users who know lmfit.
    """

    problem: Problem = field(repr=False)
    x: np.ndarray
    parameters: pd.DataFrame
    ofv: float
    aic: float
    bic: float
    n_records: int
    n_censored: int
    covariance: np.ndarray | None
    correlation: pd.DataFrame | None
    condition_number: float
    warnings: list[str]
    n_failures: int
    n_simulations: int
    seconds: float
    starts: pd.DataFrame
    minimizer_result: lmfit.minimizer.MinimizerResult = field(repr=False)
    profiles: dict = field(default_factory=dict)

    def predictions(self) -> pd.DataFrame:
        return self.problem.predictions(self.x)

    def subject_parameters(self, subject: str) -> dict[str, float]:
        """All model parameter values used for ``subject`` at the estimates."""
        return self.problem.subject_parameters(self.x, str(subject))

    @property
    def model(self) -> Model:
        return self.problem.model

    @property
    def dataset(self) -> Dataset:
        return self.problem.dataset


def _minimise(problem: Problem, params: lmfit.Parameters, max_nfev: int):
    def residual(p):
        x = np.array([p[s.name].value for s in problem.specs])
        return problem.evaluate(x)[0]

    def jacobian(p):
        x = np.array([p[s.name].value for s in problem.specs])
        J = problem.evaluate(x)[1]
        free = [k for k, s in enumerate(problem.specs) if p[s.name].vary]
        return J[:, free]

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)
        return lmfit.minimize(
            residual,
            params,
            method="least_squares",
            jac=jacobian,
            max_nfev=max_nfev,
            scale_covar=False,
            x_scale="jac",
        )


def _uncertainty(problem: Problem, x: np.ndarray, free: list[int]):
    _, _, ofv, fim = problem.evaluate(x)
    info = fim[np.ix_(free, free)]
    warnings = []
    cov = None
    corr = None
    cond = float("inf")
    try:
        cov_free = np.linalg.inv(info)
        if not np.all(np.isfinite(cov_free)) or np.any(np.diag(cov_free) <= 0):
            raise np.linalg.LinAlgError("non-positive variances")
        sd = np.sqrt(np.diag(cov_free))
        corr_m = cov_free / np.outer(sd, sd)
        cond = float(np.linalg.cond(corr_m))
        cov = np.full((len(x), len(x)), np.nan)
        cov[np.ix_(free, free)] = cov_free
        names = [problem.specs[k].name for k in free]
        corr = pd.DataFrame(corr_m, index=names, columns=names)
        if cond > 1e8:
            warnings.append(
                f"covariance is near-singular (condition number {cond:.2g}): "
                "some parameters are not identifiable from these data"
            )
    except np.linalg.LinAlgError:
        warnings.append(
            "COVARIANCE STEP FAILED: the Fisher information is singular, so no "
            "standard errors are reported; some parameters are not identifiable "
            "from these data (see the profiles)"
        )
    return cov, corr, cond, warnings


def _table(problem: Problem, x: np.ndarray, cov: np.ndarray | None) -> pd.DataFrame:
    rows = []
    for k, s in enumerate(problem.specs):
        se_int = math.sqrt(cov[k, k]) if cov is not None and np.isfinite(cov[k, k]) else np.nan
        est = s.to_natural(x[k])
        if s.log:
            se = est * se_int
            rse = 100 * se_int
            # A non-identifiable parameter has a huge SE: its upper limit is inf, not a crash.
            with np.errstate(over="ignore"):
                lo, hi = np.exp([x[k] - 1.96 * se_int, x[k] + 1.96 * se_int]).tolist()
        else:
            se = se_int
            rse = 100 * se_int / abs(est) if est else np.nan
            lo, hi = x[k] - 1.96 * se_int, x[k] + 1.96 * se_int
        rows.append(
            {
                "name": s.name,
                "quantity": s.quantity,
                "kind": s.kind,
                "subject": s.subject or "all",
                "scale": "log" if s.log else "linear",
                "estimate": est,
                "unit": s.unit,
                "se": se,
                "rse_pct": rse,
                "ci_low": lo,
                "ci_high": hi,
                "estimate_internal": x[k],
                "se_internal": se_int,
                "initial": s.initial,
            }
        )
    return pd.DataFrame(rows)


def fit(
    model: Model,
    dataset: Dataset,
    estimate: Sequence[str] = (),
    per_subject: Sequence[str] = (),
    error_models: Mapping[str, ErrorModel] | None = None,
    fixed: Mapping[str, float] | None = None,
    initial: Mapping[str, float] | None = None,
    subjects: Sequence[str] | None = None,
    blq: str = "M3",
    starts: int = 1,
    seed: int = 0,
    workers: int = 1,
    progress: bool = False,
    options: SolverOptions | None = None,
    max_nfev: int = 200,
) -> FitResult:
    """Fit ``model`` to ``dataset`` by maximum likelihood.

    Parameters
    ----------
    estimate : names of model parameters shared by all subjects (tied across subjects).
    per_subject : names of model parameters with one value per subject.
    error_models : observable name -> :class:`~pkpd_cart.estimation.likelihood.ErrorModel`; every
        observable in the data needs one. Sigmas are estimated.
    fixed : model parameters held at given values (others not estimated keep defaults);
        ``"name[subject]"`` holds it for one subject (e.g. a measured baseline).
    initial : starting values (``name`` or ``name[subject]``; sigmas as
        ``"<observable>:<add|prop|log>"``).
    subjects : fit only these subjects (an individual fit: one subject); default all.
    blq : ``"M3"`` (likelihood of being below the limit) or ``"M1"`` (discard).
    starts : number of starting points; more than 1 adds Latin-hypercube starts (seeded)
        within the bounds (log scale; +/- 2 around the initial value where unbounded).
    workers : processes for multi-start (forked; 1 = in this process).
    progress : show a progress bar over starts (tqdm).

    Returns
    -------
    FitResult
    """
    start_time = time.perf_counter()
    problem = Problem(
        model,
        dataset,
        estimate,
        per_subject,
        error_models,
        fixed,
        blq,
        subjects,
        options or DEFAULT_OPTIONS,
        initial,
    )
    params = problem.lmfit_parameters()
    points = _start_points(problem, params, starts, seed)
    results = _run_starts(problem, params, points, workers, progress, max_nfev)
    best_index = min(range(len(results)), key=lambda i: results[i][1])
    if results[best_index][0] is None or not np.isfinite(results[best_index][1]):
        raise FitError(
            f"model '{model.name}': every start failed ({len(points)} starts); "
            f"first failure: {problem.failure_messages[:1]}"
        )
    # the lmfit result of the best start (a converged point: one short polish)
    best = _fit_result(problem, params, results[best_index][0], max_nfev)
    if best is None:
        raise FitError(
            f"model '{model.name}': the best start could not be refined: "
            f"{problem.failure_messages[-1:]}"
        )
    x = np.array([best.params[s.name].value for s in problem.specs])
    free = [k for k, s in enumerate(problem.specs) if best.params[s.name].vary]
    cov, corr, cond, warnings = _uncertainty(problem, x, free)
    _, _, ofv, _ = problem.evaluate(x)
    table = _table(problem, x, cov)
    if problem.n_at_floor:
        warnings.append(
            f"{problem.n_at_floor} record(s) have a residual SD at its numerical floor "
            "(predictions near 0 with a proportional error?): the OFV and the estimates are "
            "not reliable; start from other initial values"
        )
    at_bound = [
        s.name
        for s in problem.specs
        if np.isclose(best.params[s.name].value, best.params[s.name].min)
        or np.isclose(best.params[s.name].value, best.params[s.name].max)
    ]
    if at_bound:
        warnings.append(f"estimate(s) at a bound: {', '.join(at_bound)}")
    if not best.success:
        warnings.append(f"optimiser did not report convergence: {best.message}")
    if problem.n_failures:
        warnings.append(
            f"{problem.n_failures} simulations failed at trial parameters and were penalised"
        )
    k, n = len(free), problem.n_records
    starts_table = pd.DataFrame(
        {
            "start": range(len(results)),
            "ofv": [r[1] for r in results],
            "converged": [r[3] for r in results],
        }
    ).sort_values("ofv")
    return FitResult(
        problem,
        x,
        table,
        ofv,
        ofv + 2 * k,
        ofv + k * math.log(n),
        n,
        problem.n_censored,
        cov,
        corr,
        cond,
        warnings,
        problem.n_failures,
        problem.n_simulations,
        time.perf_counter() - start_time,
        starts_table.reset_index(drop=True),
        best,
    )


def _start_points(problem: Problem, params: lmfit.Parameters, starts: int, seed: int):
    first = np.array([params[s.name].value for s in problem.specs])
    if starts <= 1:
        return [first]
    from scipy.stats import qmc

    lo, hi = [], []
    for s, v in zip(problem.specs, first):
        p = params[s.name]
        a = p.min if np.isfinite(p.min) else v - 2.0
        b = p.max if np.isfinite(p.max) else v + 2.0
        # stay within +/- 2 (log units) of the initial value: bounds may be very wide
        lo.append(max(a, v - 2.0))
        hi.append(min(b, v + 2.0))
    sample = qmc.LatinHypercube(d=len(first), seed=seed).random(starts - 1)
    return [first, *qmc.scale(sample, lo, hi)]


_FORK_PROBLEM: tuple | None = None


def _one_start(index: int):
    problem, params, points, max_nfev = _FORK_PROBLEM
    return _fit_from(problem, params, points[index], max_nfev)


def _fit_from(problem: Problem, params: lmfit.Parameters, x0: np.ndarray, max_nfev: int):
    """One start: ``(final internal x or None, OFV, simulation failures, converged)``.

    Only plain values are returned, so starts can run in other processes.
    """
    before = problem.n_failures
    res = _fit_result(problem, params, x0, max_nfev)
    if res is None:
        return None, float("inf"), problem.n_failures - before, False
    x = np.array([res.params[s.name].value for s in problem.specs])
    return x, problem.evaluate(x)[2], problem.n_failures - before, bool(res.success)


def _fit_result(problem: Problem, params: lmfit.Parameters, x0: np.ndarray, max_nfev: int):
    p = params.copy()
    for s, v in zip(problem.specs, x0):
        p[s.name].value = float(np.clip(v, p[s.name].min, p[s.name].max))
    try:
        return _minimise(problem, p, max_nfev)
    except Exception as exc:  # scipy/lmfit internals: a failed start, recorded
        problem.failure_messages.append(f"start failed: {type(exc).__name__}: {exc}")
        return None


def _run_starts(problem, params, points, workers, progress, max_nfev):
    iterator: Iterable = range(len(points))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(points), desc="fit starts", unit="start")
    results = []
    if workers > 1 and len(points) > 1:
        import multiprocessing as mp

        global _FORK_PROBLEM
        _FORK_PROBLEM = (problem, params, points, max_nfev)
        try:
            with mp.get_context("fork").Pool(workers) as pool:
                for res in pool.imap(_one_start, iterator):
                    results.append(res)
                    if bar:
                        bar.update()
        finally:
            _FORK_PROBLEM = None
        problem.n_failures += sum(r[2] for r in results)
    else:
        for i in iterator:
            results.append(_fit_from(problem, params, points[i], max_nfev))
            if bar:
                bar.update()
    if bar:
        bar.close()
    return results
