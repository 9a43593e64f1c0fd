"""The population (statistical) model: fixed effects, random effects, covariates, residual error.

A :class:`PopulationModel` says how every subject's model parameters are built from fixed
effects ``theta``, random effects ``eta ~ N(0, Omega)`` and covariates (NONMEM's ``$PK``,
nlmixr2's ``model({})``, Monolix's statistical model), and how each observable scatters
around its prediction (``$ERROR``). It is written in sympy, so the derivatives of the
individual parameters with respect to ``theta`` and ``eta`` are exact::

    pop = PopulationModel(model)
    tv_cl = pop.theta("tv_CL", 0.0047, lower=0, unit="L/h/kg")
    tv_v = pop.theta("tv_V", 1.0, lower=0, unit="L/kg")
    apgr_v = pop.theta("APGR_on_V", 0.1, lower=-0.99)
    eta_cl, eta_v = pop.eta("eta_CL", 0.031), pop.eta("eta_V", 0.031)
    WGT, APGR = pop.covariate("WGT"), pop.covariate("APGR")
    pop.individual("CL", tv_cl * WGT * sp.exp(eta_cl))
    pop.individual("V", tv_v * WGT * (1 + apgr_v * indicator(APGR < 5)) * sp.exp(eta_v))
    pop.error("C", ErrorModel.proportional(0.11))

The shorthands :meth:`PopulationModel.log_normal`, :meth:`~PopulationModel.normal` and
:meth:`~PopulationModel.logit_normal` write the common forms, with covariate effects
:func:`power`, :func:`linear` and :func:`categorical`.

The same object draws virtual patients (:meth:`PopulationModel.draw`), so a fitted
population goes straight into :func:`pkpd_cart.simulate_population`, and a virtual
:class:`~pkpd_cart.simulation.population.Population` becomes a fit's initial estimate with
:meth:`PopulationModel.from_population`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import sympy as sp

from pkpd_cart.errors import ModelDefinitionError
from pkpd_cart.estimation.likelihood import ErrorModel
from pkpd_cart.model.modelling import Model, _check_name

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from pkpd_cart.simulation.population import Population


def indicator(condition: sp.Basic) -> sp.Expr:
    """1 where ``condition`` holds, else 0 (NONMEM's ``IF (APGR.LT.5)``)."""
    return sp.Piecewise((sp.Integer(1), condition), (sp.Integer(0), True))


@dataclass(frozen=True)
class Theta:
    """A fixed effect: initial (or estimated) value, bounds, fixed flag, unit."""

    name: str
    value: float
    lower: float = -math.inf
    upper: float = math.inf
    fixed: bool = False
    unit: str = ""
    description: str = ""

    @property
    def symbol(self) -> sp.Symbol:
        return sp.Symbol(self.name, real=True)


@dataclass(frozen=True)
class CovariateEffect:
    """A covariate effect written by :func:`power`, :func:`linear` or :func:`categorical`."""

    kind: str
    covariate: str
    reference: float = 1.0
    value: float = 0.0
    fixed: bool = False
    condition: sp.Basic | None = None
    name: str = ""

    def theta_name(self, parameter: str) -> str:
        return self.name or f"{self.covariate}_on_{parameter}"

    def factor(self, theta: sp.Symbol, covariate: sp.Symbol) -> sp.Expr:
        if self.kind == "power":
            return (covariate / self.reference) ** theta
        if self.kind == "linear":
            return 1 + theta * (covariate - self.reference)
        cond = self.condition if self.condition is not None else sp.Eq(covariate, self.reference)
        return 1 + theta * indicator(cond.subs(sp.Symbol(self.covariate, real=True), covariate))


def power(
    covariate: str, reference: float, exponent: float = 1.0, fixed: bool = False, name: str = ""
) -> CovariateEffect:
    """``(COV / reference) ** theta`` (allometry: ``power("WT", 70, 0.75, fixed=True)``)."""
    return CovariateEffect("power", covariate, float(reference), float(exponent), fixed, name=name)


def linear(
    covariate: str, reference: float, slope: float = 0.0, fixed: bool = False, name: str = ""
) -> CovariateEffect:
    """``1 + theta * (COV - reference)``."""
    return CovariateEffect("linear", covariate, float(reference), float(slope), fixed, name=name)


def categorical(
    covariate: str,
    condition: sp.Basic | str | float,
    effect: float = 0.0,
    fixed: bool = False,
    name: str = "",
) -> CovariateEffect:
    """``1 + theta * [condition]``: ``categorical("APGR", "APGR < 5")`` (text or a sympy
    relation) or a level, ``categorical("SEX", 1)`` for ``[SEX == 1]``."""
    if isinstance(condition, str):
        try:
            condition = sp.sympify(condition, locals={covariate: sp.Symbol(covariate, real=True)})
        except (sp.SympifyError, TypeError, SyntaxError):
            raise ModelDefinitionError(
                f"categorical effect of {covariate}: cannot read condition {condition!r}"
            ) from None
        if not isinstance(condition, sp.core.relational.Relational):
            raise ModelDefinitionError(
                f"categorical effect of {covariate}: {condition} is not a comparison"
            )
    if isinstance(condition, sp.Basic):
        return CovariateEffect("categorical", covariate, 0.0, float(effect), fixed, condition, name)
    return CovariateEffect(
        "categorical", covariate, float(condition), float(effect), fixed, name=name
    )


@dataclass(frozen=True)
class Residual:
    """The residual error of one observable: its error model and which sigmas are fixed."""

    observable: str
    error_model: ErrorModel
    fixed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Compiled:
    """Numeric functions of a population model (see :meth:`PopulationModel.compile`)."""

    individual: object = field(repr=False)  # (theta, eta, cov) -> full parameter vector
    d_individual: object = field(repr=False)  # (theta, eta, cov) -> (n_varying, n_eta)
    varying: tuple[str, ...]  # model parameters that depend on eta
    variance: dict = field(repr=False)  # observable -> (V, dV/dF, dV/dobs, dV/dsigma)
    individual_vec: object = field(default=None, repr=False)  # the same, arrays of subjects
    d_individual_vec: object = field(default=None, repr=False)


class PopulationModel:
    """Fixed effects, random effects, covariates and residual errors of a model.

    Omega is the covariance matrix of the random effects (variances on the diagonal, as
    NONMEM's ``$OMEGA``); sigma values are the error models' standard deviations (``a``,
    ``b``), which :class:`PopulationFitResult` also reports as variances.
    """

    def __init__(self, model: Model, name: str = ""):
        if not isinstance(model, Model):
            raise ModelDefinitionError(
                f"PopulationModel needs a pkpd_cart Model, not {type(model).__name__}"
            )
        self.model = model
        self.name = name or model.name
        self.thetas: dict[str, Theta] = {}
        self.etas: list[str] = []
        self.omega = np.zeros((0, 0))
        self.omega_blocks: list[tuple[int, ...]] = []  # index groups estimated as blocks
        self.omega_fixed: list[bool] = []  # per block
        self.covariates: list[str] = []
        self.individual_expressions: dict[str, sp.Expr] = {}
        self.residuals: dict[str, Residual] = {}
        self.priors: list = []  # ThetaPrior / OmegaPrior (pkpd_cart.estimation.priors)
        self._compiled: Compiled | None = None

    def __getstate__(self) -> dict:  # lambdified functions do not pickle: rebuilt on use
        state = dict(self.__dict__)
        state["_compiled"] = None
        return state

    # -- writing ---------------------------------------------------------------------
    def _where(self) -> str:
        return f"population model '{self.name}'"

    def _claim(self, kind: str, name: str) -> None:
        _check_name(self.name, kind, name)
        taken = {
            **{n: "theta" for n in self.thetas},
            **{n: "eta" for n in self.etas},
            **{n: "covariate" for n in self.covariates},
        }
        if name in taken:
            raise ModelDefinitionError(
                f"{self._where()}: {kind} name '{name}' is already a {taken[name]}"
            )
        self._compiled = None

    def theta(
        self,
        name: str,
        value: float,
        lower: float = -math.inf,
        upper: float = math.inf,
        fixed: bool = False,
        unit: str = "",
        description: str = "",
    ) -> sp.Symbol:
        """Add a fixed effect; returns its symbol."""
        self._claim("theta", name)
        for attr, v in (("value", value), ("lower", lower), ("upper", upper)):
            if not isinstance(v, (int, float, np.floating, np.integer)) or math.isnan(v):
                raise ModelDefinitionError(
                    f"{self._where()}: theta '{name}' {attr} {v!r} is not a number"
                )
        if not lower < upper or not (lower <= value <= upper) or not math.isfinite(value):
            raise ModelDefinitionError(
                f"{self._where()}: theta '{name}' value {value:g} is not inside its bounds "
                f"[{lower:g}, {upper:g}]"
            )
        th = Theta(name, float(value), float(lower), float(upper), bool(fixed), unit, description)
        self.thetas[name] = th
        return th.symbol

    def eta(self, name: str, variance: float, fixed: bool = False) -> sp.Symbol:
        """Add a random effect with its own variance (a 1x1 block of Omega)."""
        self._claim("eta", name)
        if not (
            isinstance(variance, (int, float, np.floating))
            and variance > 0
            and math.isfinite(variance)
        ):
            raise ModelDefinitionError(
                f"{self._where()}: eta '{name}' variance {variance!r} must be a positive number"
            )
        k = len(self.etas)
        self.etas.append(name)
        omega = np.zeros((k + 1, k + 1))
        omega[:k, :k] = self.omega
        omega[k, k] = float(variance)
        self.omega = omega
        self.omega_blocks.append((k,))
        self.omega_fixed.append(bool(fixed))
        return sp.Symbol(name, real=True)

    def block(
        self, names: Sequence[str], covariance: Sequence[Sequence[float]], fixed: bool = False
    ) -> None:
        """Make ``names`` (etas already added) one block of Omega with ``covariance``
        (NONMEM's ``$OMEGA BLOCK(n)``)."""
        idx = []
        for n in names:
            if n not in self.etas:
                raise ModelDefinitionError(f"{self._where()}: block names unknown eta '{n}'")
            idx.append(self.etas.index(n))
        cov = np.asarray(covariance, dtype=float)
        if cov.shape != (len(idx), len(idx)) or not np.allclose(cov, cov.T):
            raise ModelDefinitionError(
                f"{self._where()}: block of {', '.join(names)} needs a symmetric "
                f"{len(idx)}x{len(idx)} covariance matrix"
            )
        if not _positive_definite(cov):
            raise ModelDefinitionError(
                f"{self._where()}: initial Omega block of {', '.join(names)} is not positive "
                "definite"
            )
        keep = [
            (b, f) for b, f in zip(self.omega_blocks, self.omega_fixed) if not set(b) & set(idx)
        ]
        covered = {i for b, _ in keep for i in b} | set(idx)
        if covered != set(range(len(self.etas))):
            raise ModelDefinitionError(
                f"{self._where()}: block of {', '.join(names)} splits an existing block"
            )
        self.omega_blocks = [b for b, _ in keep] + [tuple(idx)]
        self.omega_fixed = [f for _, f in keep] + [bool(fixed)]
        for a, i in enumerate(idx):
            for b, j in enumerate(idx):
                self.omega[i, j] = cov[a, b]
        self._compiled = None

    def covariate(self, name: str) -> sp.Symbol:
        """Declare a covariate: a dataset column of that name, constant within a subject."""
        self._claim("covariate", name)
        self.covariates.append(name)
        return sp.Symbol(name, real=True)

    def individual(self, parameter: str, expression: sp.Expr | float) -> None:
        """Define a model parameter of each subject as an expression of thetas, etas and
        covariates."""
        if parameter not in self.model.parameters:
            raise ModelDefinitionError(
                f"{self._where()}: model '{self.model.name}' has no parameter '{parameter}'"
            )
        if parameter in self.individual_expressions:
            raise ModelDefinitionError(
                f"{self._where()}: parameter '{parameter}' is already defined"
            )
        try:
            expr = sp.sympify(expression)
        except (sp.SympifyError, TypeError) as exc:
            raise ModelDefinitionError(
                f"{self._where()}: parameter '{parameter}': {expression!r} is not an "
                f"expression ({type(exc).__name__})"
            ) from None
        known = {*self.thetas, *self.etas, *self.covariates}
        unknown = sorted(s.name for s in expr.free_symbols if s.name not in known)
        if unknown:
            raise ModelDefinitionError(
                f"{self._where()}: parameter '{parameter}' uses unknown name(s) "
                f"{', '.join(unknown)} (declare them with theta(), eta() or covariate())"
            )
        self.individual_expressions[parameter] = expr
        self._compiled = None

    def _shorthand(
        self,
        parameter: str,
        typical: float,
        omega: float | None,
        covariates: Sequence[CovariateEffect],
        lower: float,
        upper: float,
        fixed: bool,
        transform,
    ) -> None:
        if parameter not in self.model.parameters:
            raise ModelDefinitionError(
                f"{self._where()}: model '{self.model.name}' has no parameter '{parameter}'"
            )
        tv = self.theta(
            f"tv_{parameter}",
            typical,
            lower,
            upper,
            fixed,
            self.model.parameters[parameter].unit,
        )
        eta = self.eta(f"eta_{parameter}", omega) if omega is not None else sp.Integer(0)
        factor = sp.Integer(1)
        for effect in covariates:
            cov = (
                sp.Symbol(effect.covariate, real=True)
                if effect.covariate in self.covariates
                else self.covariate(effect.covariate)
            )
            th = self.theta(effect.theta_name(parameter), effect.value, fixed=effect.fixed)
            factor *= effect.factor(th, cov)
        self.individual(parameter, transform(tv, eta, factor))

    def log_normal(
        self,
        parameter: str,
        typical: float,
        omega: float | None = None,
        covariates: Sequence[CovariateEffect] = (),
        fixed: bool = False,
    ) -> None:
        """``P = tv_P * covariate factors * exp(eta_P)``; ``omega`` is the variance of
        ``eta_P`` (None: no random effect)."""
        self._shorthand(
            parameter,
            typical,
            omega,
            covariates,
            0.0,
            math.inf,
            fixed,
            lambda tv, eta, f: tv * f * sp.exp(eta),
        )

    def normal(
        self,
        parameter: str,
        typical: float,
        omega: float | None = None,
        covariates: Sequence[CovariateEffect] = (),
        fixed: bool = False,
    ) -> None:
        """``P = tv_P * covariate factors + eta_P``."""
        self._shorthand(
            parameter,
            typical,
            omega,
            covariates,
            -math.inf,
            math.inf,
            fixed,
            lambda tv, eta, f: tv * f + eta,
        )

    def logit_normal(
        self, parameter: str, typical: float, omega: float | None = None, fixed: bool = False
    ) -> None:
        """A fraction in (0, 1): ``P = 1 / (1 + exp(-(logit(tv_P) + eta_P)))``."""
        if not 0 < typical < 1:
            raise ModelDefinitionError(
                f"{self._where()}: logit-normal '{parameter}' typical value {typical:g} is "
                "not in (0, 1)"
            )
        self._shorthand(
            parameter,
            typical,
            omega,
            (),
            0.0,
            1.0,
            fixed,
            lambda tv, eta, f: 1 / (1 + sp.exp(-(sp.log(tv / (1 - tv)) + eta))),
        )

    def error(
        self, observable: str, error_model: ErrorModel, fixed: bool | Sequence[str] = False
    ) -> None:
        """The residual error of ``observable``; ``fixed=True`` (or names) fixes sigmas."""
        if observable not in self.model.observables:
            raise ModelDefinitionError(
                f"{self._where()}: model '{self.model.name}' has no observable '{observable}'"
            )
        if not isinstance(error_model, ErrorModel):
            raise ModelDefinitionError(
                f"{self._where()}: error model of '{observable}' must be an ErrorModel"
            )
        names = error_model.sigma_names
        fixed_names = tuple(names) if fixed is True else tuple(fixed or ())
        bad = [n for n in fixed_names if n not in names]
        if bad:
            raise ModelDefinitionError(
                f"{self._where()}: '{observable}' has no sigma named {', '.join(bad)} "
                f"(its sigmas: {', '.join(names) or 'none'})"
            )
        for sym in error_model.free_symbols():
            if sym not in self.model.observables and sym not in names and sym != "F":
                raise ModelDefinitionError(
                    f"{self._where()}: error model of '{observable}' uses '{sym}', which is "
                    "neither F, an observable of the model, nor one of its sigmas"
                )
        self.residuals[observable] = Residual(observable, error_model, fixed_names)
        self._compiled = None

    # -- reading ---------------------------------------------------------------------
    def prior_theta(
        self, theta: str, mean: float, sd: float, scale: str = "log", source: str = ""
    ) -> None:
        """A normal prior on ``theta`` (on its log scale by default: ``mean`` is then the
        log of the central value), as NONMEM's ``$THETAP``/``$THETAPV``; ``source``: where
        the prior comes from (shown in reports)."""
        from pkpd_cart.estimation.priors import ThetaPrior, check_theta_prior

        prior = ThetaPrior(theta, float(mean), float(sd), scale, source)
        check_theta_prior(self, prior)
        self.priors = [p for p in self.priors if getattr(p, "theta", None) != theta] + [prior]

    def prior_omega(self, etas: Sequence[str], omega, df: float, source: str = "") -> None:
        """An inverse-Wishart prior on the Omega block of ``etas`` with central value
        ``omega`` (a matrix, or variances for a diagonal) and ``df`` degrees of freedom
        (its weight, in subjects), as NONMEM's ``$OMEGAP``/``$OMEGAPD``."""
        from pkpd_cart.estimation.priors import OmegaPrior, check_omega_prior

        etas = tuple(etas)
        matrix = np.atleast_2d(np.asarray(omega, dtype=float))
        if matrix.shape == (1, len(etas)) and len(etas) > 1:
            matrix = np.diag(matrix[0])
        prior = OmegaPrior(etas, matrix, float(df), source)
        check_omega_prior(self, prior)
        self.priors = [p for p in self.priors if not set(getattr(p, "etas", ())) & set(etas)] + [
            prior
        ]

    def sigma_values(self) -> dict[tuple[str, str], float]:
        return {
            (o, n): r.error_model.initial[n]
            for o, r in self.residuals.items()
            for n in r.error_model.sigma_names
        }

    def validate(self, for_estimation: bool = False) -> None:
        """Check the whole model; one-line :class:`ModelDefinitionError` on a problem.
        ``for_estimation``: also require residual error models (drawing patients does not)."""
        if for_estimation and not self.residuals:
            raise ModelDefinitionError(f"{self._where()}: no residual error model (use error())")
        used = set()
        for expr in self.individual_expressions.values():
            used |= {s.name for s in expr.free_symbols}
        unused = [e for e in self.etas if e not in used]
        if unused:
            raise ModelDefinitionError(
                f"{self._where()}: random effect(s) {', '.join(unused)} appear in no "
                "individual parameter"
            )
        idle = [n for n, th in self.thetas.items() if n not in used and not th.fixed]
        if idle:
            raise ModelDefinitionError(
                f"{self._where()}: theta(s) {', '.join(idle)} appear in no individual "
                "parameter (they could not be estimated)"
            )
        if len(self.etas) and not _positive_definite(self.omega):
            raise ModelDefinitionError(f"{self._where()}: initial Omega is not positive definite")

    def theta_vector(self) -> np.ndarray:
        return np.array([th.value for th in self.thetas.values()], dtype=float)

    def compile(self) -> Compiled:
        """Numeric functions of the individual parameters and residual variances."""
        if self._compiled is not None:
            return self._compiled
        self.validate()
        theta_s = [sp.Symbol(n, real=True) for n in self.thetas]
        eta_s = [sp.Symbol(n, real=True) for n in self.etas]
        cov_s = [sp.Symbol(n, real=True) for n in self.covariates]
        defaults = self.model.parameter_values
        full = [self.individual_expressions.get(n, sp.Float(v)) for n, v in defaults.items()]
        varying = tuple(
            n for n, e in self.individual_expressions.items() if e.free_symbols & set(eta_s)
        )
        jac = [[sp.diff(self.individual_expressions[n], e) for e in eta_s] for n in varying]
        args = (theta_s, eta_s, cov_s)
        individual = sp.lambdify(args, full, modules="math", cse=True)
        d_individual = sp.lambdify(args, jac or [[]], modules="math", cse=True)
        variance = {}
        F = sp.Symbol("F", real=True)
        for obs, res in self.residuals.items():
            sig = [sp.Symbol(n, real=True) for n in res.error_model.sigma_names]
            V = res.error_model.variance_expression(F, dict(zip(res.error_model.sigma_names, sig)))
            others = [sp.Symbol(o, real=True) for o in self.model.observables]
            vargs = (F, others, sig)
            # numpy: the variance functions take all of a subject's records at once
            variance[obs] = (
                sp.lambdify(vargs, V, modules="numpy"),
                sp.lambdify(vargs, sp.diff(V, F), modules="numpy"),
                sp.lambdify(vargs, [sp.diff(V, o) for o in others], modules="numpy"),
                sp.lambdify(vargs, [sp.diff(V, s) for s in sig] or [0], modules="numpy"),
            )
        individual_vec = sp.lambdify(args, full, modules="numpy", cse=True)
        d_individual_vec = sp.lambdify(args, jac or [[]], modules="numpy", cse=True)
        self._compiled = Compiled(
            individual, d_individual, varying, variance, individual_vec, d_individual_vec
        )
        return self._compiled

    def individual_matrix(
        self, theta: np.ndarray, eta: np.ndarray, covariates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Parameters (n, n_parameters) and ``dP/deta`` of the varying ones
        (n, n_varying, n_eta) of ``n`` subjects at once (rows of ``eta``, ``covariates``)."""
        c = self.compile()
        n = eta.shape[0]
        args = (list(theta), list(eta.T), list(covariates.T))
        values = c.individual_vec(*args)
        P = np.column_stack([np.broadcast_to(np.asarray(v, dtype=float), (n,)) for v in values])
        k = len(c.varying)
        D = np.zeros((n, k, len(self.etas)))
        if k:
            rows = c.d_individual_vec(*args)
            for i in range(k):
                for j in range(len(self.etas)):
                    D[:, i, j] = np.broadcast_to(np.asarray(rows[i][j], dtype=float), (n,))
        return P, D

    def individual_parameters(
        self, eta: np.ndarray, covariates: np.ndarray, theta: np.ndarray | None = None
    ) -> np.ndarray:
        """Full model parameter vector of one subject (model order)."""
        c = self.compile()
        th = self.theta_vector() if theta is None else theta
        return np.asarray(c.individual(list(th), list(eta), list(covariates)), dtype=float)

    # -- values ----------------------------------------------------------------------
    def with_values(
        self,
        theta: Mapping[str, float] | None = None,
        omega: np.ndarray | None = None,
        sigma: Mapping[tuple[str, str], float] | None = None,
    ) -> PopulationModel:
        """A copy with new theta, Omega and sigma values (e.g. a fit's estimates)."""
        new = copy.copy(self)
        new.thetas = dict(self.thetas)
        for name, v in (theta or {}).items():
            th = self.thetas[name]
            new.thetas[name] = Theta(
                th.name, float(v), th.lower, th.upper, th.fixed, th.unit, th.description
            )
        new.omega = np.array(self.omega if omega is None else omega, dtype=float)
        new.residuals = dict(self.residuals)
        for (obs, key), v in (sigma or {}).items():
            r = new.residuals[obs]
            new.residuals[obs] = Residual(obs, r.error_model.with_sigma(key, float(v)), r.fixed)
        new._compiled = self._compiled
        return new

    @classmethod
    def from_population(
        cls, model: Model, population: Population, error_models: Mapping[str, ErrorModel] = ()
    ) -> PopulationModel:
        """A log-normal population model from a virtual :class:`Population` (typical values
        and SDs of log-normal variability): a fit's initial estimate."""
        pop = cls(model)
        names = list(dict.fromkeys([*population.typical, *population.omega]))
        for n in names:
            typical = population.typical.get(
                n, model.parameters[n].value if n in model.parameters else 1.0
            )
            w = population.omega.get(n)
            pop.log_normal(n, float(typical), None if w is None else float(w) ** 2)
        for obs, em in dict(error_models).items():
            pop.error(obs, em)
        return pop

    def draw(
        self,
        model: Model | None = None,
        n: int = 1,
        seed: int = 0,
        covariates: pd.DataFrame | Mapping[str, float] | None = None,
    ) -> pd.DataFrame:
        """``n`` virtual subjects: eta ~ N(0, Omega), individual parameters (one row each).

        ``covariates``: one row per subject (a DataFrame of ``n`` rows) or values shared by
        all. The same signature as ``Population.draw``, so ``simulate_population`` takes a
        fitted population model.
        """
        import pandas as pd

        if model is not None and model is not self.model and model.name != self.model.name:
            raise ModelDefinitionError(
                f"{self._where()}: drawn for model '{model.name}', written for '{self.model.name}'"
            )
        rng = np.random.default_rng(seed)
        k = len(self.etas)
        eta = rng.multivariate_normal(np.zeros(k), self.omega, size=n) if k else np.zeros((n, 0))
        if isinstance(covariates, pd.DataFrame):
            missing = [c for c in self.covariates if c not in covariates]
            cov_rows = covariates.reset_index(drop=True)
            if len(cov_rows) != n:
                raise ModelDefinitionError(
                    f"{self._where()}: {len(cov_rows)} covariate rows for {n} subjects"
                )
        else:
            shared = dict(covariates or {})
            missing = [c for c in self.covariates if c not in shared]
            cov_rows = pd.DataFrame({c: [shared[c]] * n for c in shared})
        if missing:
            raise ModelDefinitionError(
                f"{self._where()}: no value for covariate(s) {', '.join(missing)}"
            )
        rows = [
            self.individual_parameters(
                eta[i],
                cov_rows.loc[i, self.covariates].to_numpy(dtype=float)
                if self.covariates
                else np.zeros(0),
            )
            for i in range(n)
        ]
        frame = pd.DataFrame(rows, columns=list(self.model.parameters))
        for c in cov_rows.columns:
            frame[c] = cov_rows[c].to_numpy()
        for j, name in enumerate(self.etas):
            frame[name] = eta[:, j]
        return frame.drop(columns=list(self.etas))


def _positive_definite(matrix: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return False
    return bool(np.all(np.isfinite(matrix)))
