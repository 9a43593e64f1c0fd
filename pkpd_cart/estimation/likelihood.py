"""Residual error models, the -2 log-likelihood (OFV) and BLQ handling (M3 / M1).

For an observation ``y`` with prediction ``f``:

============  ==========================  ==========================================
kind          residual ``e``               standard deviation ``sigma``
============  ==========================  ==========================================
additive      (y - f) / sigma             ``a``
proportional  (y - f) / sigma             ``b * |f|``
combined      (y - f) / sigma             ``sqrt(a^2 + (b f)^2)``
lognormal     (log y - log f) / sigma     ``s`` (additive on the log scale)
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

KINDS = ("additive", "proportional", "combined", "lognormal")
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

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown error model {self.kind!r}; choose one of {', '.join(KINDS)}")
        needed = {
            "additive": ("a",),
            "proportional": ("b",),
            "combined": ("a", "b"),
            "lognormal": ("a",),
        }[self.kind]
        for name in needed:
            value = getattr(self, name)
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
    def lognormal(cls, s: float) -> ErrorModel:
        return cls("lognormal", a=s)

    @property
    def sigma_names(self) -> tuple[str, ...]:
        """Names of the sigma parameters (suffixes): ``add``, ``prop``, or ``log``."""
        return {
            "additive": ("add",),
            "proportional": ("prop",),
            "combined": ("add", "prop"),
            "lognormal": ("log",),
        }[self.kind]

    @property
    def initial(self) -> dict[str, float]:
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
        a, b = sig["add"], sig["prop"]
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
