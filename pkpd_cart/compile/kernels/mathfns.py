"""Scalar helpers called by generated model code (both backends).

They give every backend the same numbers where plain Python, numpy and numba differ: real
powers, logarithms and domain-limited functions return nan or -inf instead of raising, and
``0 * inf`` in a Jacobian-times-sensitivity product is 0. Compiled once per machine.
"""

import math

from .jit import PURE
from .jit import jit as _jit

# Generated modules import these with *, underscores and all.
__all__ = [
    "_fpow",
    "_fpowlog",
    "_fpow_over",
    "_log",
    "_mul",
    "_finite",
    "_heaviside",
    "_digamma",
    "_max",
    "_min",
    "_atanh",
    "_acosh",
    "_asin",
    "_acos",
    "_gamma",
]


@_jit
def _fpow(b, e):
    """Real power: nan (never a complex number) for a negative base and fractional exponent.

    Exponents 1, 2 and 0, common values of estimated or fixed Hill coefficients, skip the
    library's ``pow`` (20-40 ns a call, a fifth of a simulation of ``sle_cart``): ``b``,
    ``b * b`` and 1 are the values ``pow`` returns, exactly rounded."""
    if e == 1.0:
        return b
    if e == 2.0:
        return b * b
    if e == 0.0:
        return 1.0
    if b >= 0.0 or e == math.floor(e):
        return b**e
    return math.nan


@_jit
def _fpowlog(P, b):
    """P * log(b) for P = b**e, with its limit 0 at b = 0."""
    if b == 0.0:
        return 0.0
    return P * _log(b)


@_jit
def _fpow_over(P, b, e):
    """b**(e - 1) from P = b**e: P / b, or the power itself where that quotient is not
    b**(e - 1) (b zero or not finite, P not finite)."""
    if b != 0.0 and math.isfinite(b) and math.isfinite(P):
        return P / b
    return _fpow(b, e - 1.0)


@_jit
def _log(x):
    """math.log that returns -inf at 0 and nan below (as numba and numpy do)."""
    if x > 0.0:
        return math.log(x)
    if x == 0.0:
        return -math.inf
    return math.nan


@_jit
def _mul(a, s):
    """a * s, where s == 0 gives 0 even for an infinite a.

    An infinite Jacobian entry such as d(x**0.25)/dx at x = 0 meets a zero sensitivity at
    the start of a run; the limit of the product along the trajectory is 0, not nan.
    """
    return 0.0 if s == 0.0 else a * s


@_jit
def _finite(a):
    return a if math.isfinite(a) else 0.0


@_jit
def _heaviside(x):
    return 1.0 if x > 0.0 else 0.0


@_jit
def _digamma(x):
    """psi(x) = d log gamma(x)/dx: recurrence up to x >= 10, then the asymptotic series
    (absolute error about 1e-13)."""
    if x <= 0.0 and x == math.floor(x):
        return math.nan
    acc = 0.0
    if x < 0.0:  # reflection: psi(x) = psi(1 - x) - pi cot(pi x)
        acc = -math.pi / math.tan(math.pi * x)
        x = 1.0 - x
    while x < 10.0:
        acc -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    series = f * (1.0 / 12 - f * (1.0 / 120 - f * (1.0 / 252 - f * (1.0 / 240 - f / 132))))
    return acc + math.log(x) - 0.5 / x - series


@_jit
def _max(a, b):
    return a if a >= b else b


@_jit
def _min(a, b):
    return a if a <= b else b


def _domain_limited(name: str):
    """math.<name>, but nan (never a ValueError) outside its domain. Compiled code needs no
    wrapper: numba's math functions return nan there; plain Python raises."""
    function = getattr(math, name)
    if not PURE:
        return function

    def limited(x):
        try:
            return function(x)
        except Exception:  # ValueError outside the domain (OverflowError for gamma)
            return math.nan

    limited.__name__ = limited.__qualname__ = f"_{name}"
    return limited


_atanh, _acosh, _asin, _acos, _gamma = (
    _domain_limited(name) for name in ("atanh", "acosh", "asin", "acos", "gamma")
)
