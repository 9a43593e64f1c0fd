"""Informative priors of a population fit, as NONMEM's ``$PRIOR NWPRI`` sets them.

With priors, a FOCE-family fit maximises the posterior (MAP): the objective is the OFV
plus ``-2 log`` of the priors (without their normalising constants):

* :class:`ThetaPrior`: a normal prior on a theta, on its natural or its log scale,
  ``((g(theta) - mean) / sd)^2`` with ``g`` the identity or the log;
* :class:`OmegaPrior`: an inverse-Wishart prior on a block of Omega with ``df``
  degrees of freedom and scale ``df Omega_p`` (NONMEM's NWPRI convention, in which
  ``Omega_p`` is the prior's central value and ``df`` its weight in subjects),
  ``(df + q + 1) log|Omega| + df tr(Omega_p Omega^-1)``.

Every prior carries its source, and the report lists each one with its weight and its
contribution to the objective at the estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pkpd_cart.errors import ModelDefinitionError


@dataclass(frozen=True)
class ThetaPrior:
    theta: str
    mean: float  # on the prior's scale
    sd: float
    scale: str = "log"  # "log" or "linear"
    source: str = ""

    def describe(self) -> str:
        where = f"log({self.theta})" if self.scale == "log" else self.theta
        central = (
            f"exp({self.mean:.4g}) = {math.exp(self.mean):.4g}"
            if self.scale == "log"
            else (f"{self.mean:.4g}")
        )
        return f"{where} ~ N(mean {self.mean:.4g}, SD {self.sd:.4g}) (central value {central})"


@dataclass(frozen=True)
class OmegaPrior:
    etas: tuple[str, ...]
    omega: np.ndarray  # the prior's central Omega_p of these etas
    df: float
    source: str = ""

    def describe(self) -> str:
        diag = ", ".join(f"{e} {v:.4g}" for e, v in zip(self.etas, np.diag(self.omega)))
        return f"Omega({', '.join(self.etas)}) ~ inverse Wishart(df {self.df:g}, Omega_p: {diag})"


def check_theta_prior(pop, prior: ThetaPrior) -> None:
    where = f"population model '{pop.name}'"
    if prior.theta not in pop.thetas:
        raise ModelDefinitionError(f"{where}: prior on unknown theta '{prior.theta}'")
    th = pop.thetas[prior.theta]
    if th.fixed:
        raise ModelDefinitionError(f"{where}: prior on fixed theta '{prior.theta}'")
    if prior.scale not in ("log", "linear"):
        raise ModelDefinitionError(f"{where}: prior scale must be 'log' or 'linear'")
    if prior.scale == "log" and th.lower < 0:
        raise ModelDefinitionError(
            f"{where}: a log-scale prior needs theta '{prior.theta}' bounded below by 0"
        )
    if not (math.isfinite(prior.mean) and math.isfinite(prior.sd) and prior.sd > 0):
        raise ModelDefinitionError(
            f"{where}: prior on '{prior.theta}' needs a finite mean and an SD > 0"
        )


def check_omega_prior(pop, prior: OmegaPrior) -> None:
    where = f"population model '{pop.name}'"
    unknown = [e for e in prior.etas if e not in pop.etas]
    if unknown:
        raise ModelDefinitionError(f"{where}: Omega prior on unknown eta(s) {', '.join(unknown)}")
    q = len(prior.etas)
    omega = np.asarray(prior.omega, dtype=float)
    if omega.shape != (q, q) or not np.allclose(omega, omega.T):
        raise ModelDefinitionError(f"{where}: Omega prior must be a symmetric {q}x{q} matrix")
    if not np.all(np.linalg.eigvalsh(omega) > 0):
        raise ModelDefinitionError(f"{where}: Omega prior is not positive definite")
    if not (math.isfinite(prior.df) and prior.df > q - 1):
        raise ModelDefinitionError(
            f"{where}: Omega prior degrees of freedom must be > {q - 1} (got {prior.df})"
        )
    for block in pop.omega_blocks:
        names = {pop.etas[i] for i in block}
        if names & set(prior.etas) and not names <= set(prior.etas) and len(block) > 1:
            raise ModelDefinitionError(
                f"{where}: Omega prior on {', '.join(prior.etas)} splits the block "
                f"{', '.join(sorted(names))}"
            )


def contributions(pop, theta: np.ndarray, omega: np.ndarray) -> list[tuple[object, float]]:
    """Each prior with its ``-2 log`` contribution (no constants) at ``theta``, ``omega``."""
    names = list(pop.thetas)
    out = []
    for prior in pop.priors:
        if isinstance(prior, ThetaPrior):
            value = theta[names.index(prior.theta)]
            if prior.scale == "log":
                value = math.log(value) if value > 0 else -math.inf
            out.append((prior, ((value - prior.mean) / prior.sd) ** 2))
        else:
            idx = [pop.etas.index(e) for e in prior.etas]
            block = omega[np.ix_(idx, idx)]
            sign, logdet = np.linalg.slogdet(block)
            if sign <= 0:
                out.append((prior, math.inf))
                continue
            q = len(idx)
            trace = float(np.trace(prior.omega @ np.linalg.inv(block)))
            out.append((prior, (prior.df + q + 1) * logdet + prior.df * trace))
    return out


def penalty(pop, theta: np.ndarray, omega: np.ndarray) -> float:
    """``-2 log`` of all priors (no constants); 0 without priors."""
    if not pop.priors:
        return 0.0
    return float(sum(value for _, value in contributions(pop, theta, omega)))
