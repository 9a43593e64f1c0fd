"""Residual error models, the -2 log-likelihood (OFV) and BLQ handling (M3 / M1).

For an observation ``y`` with prediction ``f``:

============  ==========================  ==========================================
kind          residual ``e``               standard deviation ``sigma``
============  ==========================  ==========================================
additive      (y - f) / sigma             ``a``
proportional  (y - f) / sigma             ``b * |f|``
combined      (y - f) / sigma             ``sqrt(a^2 + (b f)^2)`` (NONMEM/nlmixr2
                                          "combined2": the variances add)
combined1     (y - f) / sigma             ``a + b |f|`` (nlmixr2 "combined1": the SDs add)
lognormal     (log y - log f) / sigma     ``s`` (additive on the log scale)
custom        (y - f) / sigma             any sympy expression of ``F`` (the prediction),
                                          the model's observables and named sigmas
                                          (population fits only)
============  ==========================  ==========================================

-2 log-likelihood of an observation: ``e^2 + log(2 pi sigma^2)`` (plus ``2 log y`` for the
log-normal model, so that OFVs of different error models on the same data compare).
A value below the limit of quantification ``L`` contributes, by Beal's M3 method,
``-2 log Phi(z)`` with ``z = (L - f) / sigma`` (``(log L - log f) / s`` log-normal); M1
discards it.

For Gauss-Newton optimisation, the OFV is written as a sum of squares of residuals
``[e_i; sqrt(log sigma_i^2 - log floor_i^2); sqrt(-2 log Phi(z_j))]`` whose Jacobian follows
from the model's forward sensitivities by the chain rule. ``floor_i`` is a fixed positive
lower bound of ``sigma_i`` (a tiny fraction of the data's scale), so the sum of squares
equals the OFV up to a constant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pkpd_cart.errors import InputError

KINDS = ("additive", "proportional", "combined", "combined1", "lognormal", "custom")
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class ErrorModel:
    """Residual error model of one observable; sigmas are estimated with the fit.

    Use the constructors: ``ErrorModel.additive(a)``, ``.proportional(b)``,
    ``.combined(a, b)``, ``.lognormal(s)``; values are initial estimates (``a`` in the
    observable's unit, ``b`` and ``s`` dimensionless).
    """

    kind: str
    a: float = 0.0
    b: float = 0.0
    sd: str = ""  # custom: the SD as sympy text
    sigmas: tuple[tuple[str, float], ...] = ()  # custom: sigma names and values

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown error model {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.kind == "custom":
            self._custom_expression()  # parse now: a bad expression fails here, in one line
            for name, value in self.sigmas:
                if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                    raise InputError(
                        f"custom error model: sigma {name} = {value!r} must be a positive number"
                    )
            return
        needed = {
            "additive": ("a",),
            "proportional": ("b",),
            "combined": ("a", "b"),
            "combined1": ("a", "b"),
            "lognormal": ("a",),
        }[self.kind]
        for name in needed:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise InputError(f"{self.kind} error model: {name} = {value!r} is not a number")
            if not (math.isfinite(value) and value > 0):
                raise InputError(
                    f"{self.kind} error model: {name} = {value} must be a positive number"
                )

    @classmethod
    def additive(cls, a: float) -> ErrorModel:
        return cls("additive", a=a)

    @classmethod
    def proportional(cls, b: float) -> ErrorModel:
        return cls("proportional", b=b)

    @classmethod
    def combined(cls, a: float, b: float) -> ErrorModel:
        return cls("combined", a=a, b=b)

    @classmethod
    def combined2(cls, a: float, b: float) -> ErrorModel:
        """Same as :meth:`combined`: ``sigma^2 = a^2 + (b f)^2`` (NONMEM's usual form)."""
        return cls("combined", a=a, b=b)

    @classmethod
    def combined1(cls, a: float, b: float) -> ErrorModel:
        """``sigma = a + b |f|`` (the SDs add; nlmixr2 ``addProp = 1``)."""
        return cls("combined1", a=a, b=b)

    @classmethod
    def lognormal(cls, s: float) -> ErrorModel:
        return cls("lognormal", a=s)

    @classmethod
    def custom(cls, sd: str, sigmas: dict[str, float] | None = None) -> ErrorModel:
        """The SD as an expression of ``F`` (this observable's prediction), other
        observables of the model, and named sigmas with initial values, e.g.
        ``ErrorModel.custom("b * f2", {"b": 0.3})`` (nlmixr2's ``propF(b, f2)``)."""
        return cls(
            "custom", sd=str(sd), sigmas=tuple((k, float(v)) for k, v in (sigmas or {}).items())
        )

    def _custom_expression(self):
        import sympy as sp

        try:
            expr = sp.sympify(self.sd, locals={"F": sp.Symbol("F", real=True)})
        except (sp.SympifyError, TypeError, SyntaxError) as exc:
            raise InputError(
                f"custom error model: cannot read SD {self.sd!r} ({type(exc).__name__})"
            ) from None
        if not isinstance(expr, sp.Expr):
            raise InputError(f"custom error model: SD {self.sd!r} is not an expression")
        return expr.subs({s: sp.Symbol(s.name, real=True) for s in expr.free_symbols})

    def free_symbols(self) -> tuple[str, ...]:
        """Names the SD uses (custom models; the standard ones use only ``F`` and sigmas)."""
        if self.kind != "custom":
            return ()
        return tuple(sorted(s.name for s in self._custom_expression().free_symbols))

    def variance_expression(self, F, sigma: dict):
        """The residual variance as a sympy expression of the prediction symbol ``F`` and
        the sigma symbols (log scale for ``lognormal``: ``F`` is then log f)."""
        import sympy as sp

        if self.kind == "custom":
            expr = self._custom_expression()
            return (
                expr.subs({sp.Symbol(k, real=True): v for k, v in sigma.items()}).subs(
                    sp.Symbol("F", real=True), F
                )
                ** 2
            )
        if self.kind == "additive":
            return sigma["add"] ** 2
        if self.kind == "lognormal":
            return sigma["log"] ** 2
        if self.kind == "proportional":
            return sigma["prop"] ** 2 * F**2
        if self.kind == "combined":
            return sigma["add"] ** 2 + sigma["prop"] ** 2 * F**2
        return (sigma["add"] + sigma["prop"] * sp.Abs(F)) ** 2

    def with_sigma(self, name: str, value: float) -> ErrorModel:
        """A copy with sigma ``name`` set to ``value``."""
        from dataclasses import replace

        if self.kind == "custom":
            return replace(
                self, sigmas=tuple((k, value if k == name else v) for k, v in self.sigmas)
            )
        attr = {"add": "a", "log": "a", "prop": "b"}[name]
        return replace(self, **{attr: value})

    @property
    def sigma_names(self) -> tuple[str, ...]:
        """Names of the sigma parameters (suffixes): ``add``, ``prop``, or ``log``."""
        if self.kind == "custom":
            return tuple(n for n, _ in self.sigmas)
        return {
            "additive": ("add",),
            "proportional": ("prop",),
            "combined": ("add", "prop"),
            "combined1": ("add", "prop"),
            "lognormal": ("log",),
        }[self.kind]

    @property
    def initial(self) -> dict[str, float]:
        if self.kind == "custom":
            return dict(self.sigmas)
        values = {"add": self.a, "prop": self.b, "log": self.a}
        return {k: values[k] for k in self.sigma_names}

    def sigma(self, f: np.ndarray, sig: dict[str, float]) -> tuple[np.ndarray, dict]:
        """``sigma`` at predictions ``f`` and its derivatives: ``(sigma, {'f': ds/df,
        name: ds/dsigma_name})``."""
        f = np.asarray(f, dtype=float)
        if self.kind in ("additive", "lognormal"):
            key = "add" if self.kind == "additive" else "log"
            s = np.full_like(f, sig[key])
            return s, {"f": np.zeros_like(f), key: np.ones_like(f)}
        if self.kind == "proportional":
            s = sig["prop"] * np.abs(f)
            return s, {"f": sig["prop"] * np.sign(f), "prop": np.abs(f)}
        if self.kind == "custom":
            raise InputError(
                "custom error models are used by population fits (fit_population) only"
            )
        a, b = sig["add"], sig["prop"]
        if self.kind == "combined1":
            s = a + b * np.abs(f)
            return s, {"f": b * np.sign(f), "add": np.ones_like(f), "prop": np.abs(f)}
        s = np.sqrt(a**2 + (b * f) ** 2)
        return s, {"f": b**2 * f / s, "add": a / s, "prop": b * f**2 / s}


def minus2ll_observed(y, f, sigma, lognormal: bool) -> np.ndarray:
    """-2 log-likelihood of uncensored observations (elementwise)."""
    if lognormal:
        e = (np.log(y) - np.log(f)) / sigma
        return e**2 + LOG_2PI + 2 * np.log(sigma) + 2 * np.log(y)
    e = (y - f) / sigma
    return e**2 + LOG_2PI + 2 * np.log(sigma)


def minus2ll_censored(limit, f, sigma, lognormal: bool) -> np.ndarray:
    """-2 log-likelihood of values below ``limit`` (M3): ``-2 log Phi(z)``."""
    z = (np.log(limit) - np.log(f)) / sigma if lognormal else (limit - f) / sigma
    from scipy.special import log_ndtr  # imported on use: keeps `import pkpd_cart` light

    return -2.0 * log_ndtr(z)


def mills_ratio(z: np.ndarray) -> np.ndarray:
    """phi(z) / Phi(z), computed stably on the log scale."""
    log_phi = -0.5 * z**2 - 0.5 * LOG_2PI
    from scipy.special import log_ndtr

    return np.exp(log_phi - log_ndtr(z))
