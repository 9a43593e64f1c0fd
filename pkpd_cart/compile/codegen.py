"""Generate plain Python source for a model's numeric functions.

One table, :data:`GENERATED`, lists every function written into the module. Each is a
straight-line block of common subexpressions (``sympy.cse``) followed by assignments to
an output array, so the same text runs as pure Python or under ``numba.njit``.

Calling conventions (``n`` states, ``np`` parameters, ``no`` observables, ``ns`` switches):

* ``y`` state vector (n,), ``t`` time, ``p`` parameters (np,), ``sw`` switch flags (ns,)
* the augmented sensitivity vector is ``[x, s_0, ..., s_{k-1}]``, each block of length n;
  direction ``j < len(pidx)`` is parameter ``pidx[j]``, later directions are initial values.
"""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import dataclass
from pathlib import Path

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from pkpd_cart.model.modelling import Model, t

# The compiled integrator appended to every generated module (see bdf_template.py).
INTEGRATOR_SOURCE = (Path(__file__).parent / "bdf_template.py").read_text()
# Part of the cache key: a changed generator (this file) or integrator never reuses a
# stale module.
CODEGEN_VERSION = hashlib.sha256(
    (Path(__file__).read_text() + INTEGRATOR_SOURCE).encode()
).hexdigest()[:16]


@dataclass(frozen=True)
class GeneratedFunction:
    name: str
    signature: str
    doc: str


GENERATED = (
    GeneratedFunction("rhs", "y, t, p, sw", "dx/dt, shape (n,)"),
    GeneratedFunction("jac", "y, t, p, sw", "df/dx, shape (n, n)"),
    GeneratedFunction("jac_solver", "y, t, p, sw", "jac with non-finite entries set to 0"),
    GeneratedFunction("dfdp", "y, t, p, sw", "df/dp, shape (n, np)"),
    GeneratedFunction("sens_rhs", "y, t, p, sw, pidx", "augmented rhs [f, J s_j + df/dp_j]"),
    GeneratedFunction(
        "sens_jac_banded",
        "y, t, p, sw, pidx",
        "block-diagonal Jacobian of the augmented system, LSODA banded layout",
    ),
    GeneratedFunction("observables", "y, t, p, sw", "h(x, p), shape (no,)"),
    GeneratedFunction("observables_dx", "y, t, p, sw", "dh/dx, shape (no, n)"),
    GeneratedFunction("observables_dp", "y, t, p, sw", "dh/dp, shape (no, np)"),
    GeneratedFunction("observe_all", "Y, T, p, SW", "observables at every row, (nt, no)"),
    GeneratedFunction("observe_sens_all", "Y, T, p, SW, S, pidx", "dh/dtheta, (nt, no, ns)"),
    GeneratedFunction("initial", "p", "x(t0) from the initial expressions, (n,)"),
    GeneratedFunction("initial_dp", "p", "dx(t0)/dp, shape (n, np)"),
    GeneratedFunction("switch_times", "p", "switch times, shape (ns,)"),
    GeneratedFunction("switch_times_dp", "p", "d(switch time)/dp, shape (ns, np)"),
)


class FPow(sp.Function):
    """Real power ``b**e`` with a non-integer exponent, differentiated safely.

    ``d/de b**e = b**e * log(b)`` is 0 * -inf = nan at ``b = 0`` when evaluated naively; its
    limit (for e > 0) is 0, which :class:`FPowLog` returns.
    """

    def fdiff(self, argindex=1):
        b, e = self.args
        if argindex == 1:
            return e * FPow(b, e - 1)
        return FPowLog(b, e)


class FPowLog(sp.Function):
    """``b**e * log(b)``, with its limit 0 at ``b = 0``."""

    def fdiff(self, argindex=1):
        b, e = self.args
        if argindex == 1:
            return FPow(b, e - 1) * (e * sp.log(b) + 1)
        return FPowLog(b, e) * sp.log(b)


def real_powers(expr: sp.Expr) -> sp.Expr:
    """Replace non-integer powers by :class:`FPow` so derivatives stay finite at 0."""
    return expr.replace(lambda e: e.is_Pow and not e.exp.is_Integer, lambda e: FPow(e.base, e.exp))


# math functions that raise ValueError outside their domain in plain Python
_DOMAIN_LIMITED = ("atanh", "acosh", "asin", "acos", "gamma")


class _Printer(PythonCodePrinter):
    """Python printer whose output is also valid numba: no complex powers, no exceptions."""

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp.is_Integer:
            if exp == -1:
                return f"(1.0/({self._print(base)}))"
            if exp < 0:
                return f"(1.0/({self._print(base)})**{-int(exp)})"
            return f"({self._print(base)})**{int(exp)}"
        return f"_fpow({self._print(base)}, {self._print(exp)})"

    def _print_FPow(self, expr):
        return f"_fpow({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_FPowLog(self, expr):
        return f"_fpowlog({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_log(self, expr):
        return f"_log({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        return f"_heaviside({self._print(expr.args[0])})"

    def _print_Max(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"_max({out}, {a})"
        return out

    def _print_Min(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"_min({out}, {a})"
        return out

    def _print_Derivative(self, expr):
        # floor, ceiling (SBML's and rem/quotient) are piecewise constant: derivative 0
        if isinstance(expr.expr, (sp.floor, sp.ceiling)):
            return "0.0"
        return super()._print_Derivative(expr)

    def _print_Subs(self, expr):  # d floor(g(x))/dx = Subs(d floor(xi)/d xi, xi, g(x)) g'(x)
        inner = expr.expr
        if isinstance(inner, sp.Derivative) and isinstance(inner.expr, (sp.floor, sp.ceiling)):
            return "0.0"
        return self._print(expr.doit())

    def _print_polygamma(self, expr):
        # d gamma(x)/dx = gamma(x) polygamma(0, x): SBML factorial(n) = gamma(n + 1)
        if expr.args[0] == 0:
            return f"_digamma({self._print(expr.args[1])})"
        return self._print_not_supported(expr)

    def _print_domain_limited(self, expr):  # nan outside the domain, as numba: no ValueError
        return f"_{type(expr).__name__}({self._print(expr.args[0])})"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return f"({float(expr.p)!r}/{float(expr.q)!r})"

    def _print_Integer(self, expr):
        return f"{float(expr)!r}"


for _name in _DOMAIN_LIMITED:
    setattr(_Printer, f"_print_{_name}", _Printer._print_domain_limited)


def _printer() -> _Printer:
    return _Printer({"fully_qualified_modules": True, "standard": "python3"})


HELPERS = '''
@_jit
def _fpow(b, e):
    """Real power: nan (never a complex number) for a negative base and fractional exponent."""
    if b >= 0.0 or e == math.floor(e):
        return b ** e
    return math.nan


@_jit
def _fpowlog(b, e):
    """b**e * log(b), with its limit 0 at b = 0."""
    if b == 0.0:
        return 0.0
    return _fpow(b, e) * _log(b)


@_jit
def _log(x):
    """math.log that returns -inf at 0 and nan below (as numba and numpy do)."""
    if x > 0.0:
        return math.log(x)
    if x == 0.0:
        return -math.inf
    return math.nan


@_jit
def _finite_or_zero(A):
    """A copy of A with non-finite entries set to 0 (a Newton matrix must stay finite)."""
    out = A.copy()
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            if not math.isfinite(A[i, j]):
                out[i, j] = 0.0
    return out


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
'''
HELPERS += "".join(
    f"""
@_jit
def _{name}(x):
    try:
        return math.{name}(x)
    except Exception:  # plain Python raises ValueError outside the domain; numba never
        return math.nan
"""
    for name in _DOMAIN_LIMITED
)


@dataclass
class _Symbols:
    """Maps model symbols onto the local variable names used in generated code."""

    model: Model

    def __post_init__(self) -> None:
        m = self.model
        self.x = [sp.Symbol(f"x_{n}", real=True) for n in m.states]
        self.p = [sp.Symbol(f"p_{n}", real=True) for n in m.parameters]
        self.sw = [sp.Symbol(f"sw_{n}", real=True) for n in m.switches]
        self.sub = {s.symbol: v for s, v in zip(m.states.values(), self.x)}
        self.sub.update({s.symbol: v for s, v in zip(m.parameters.values(), self.p)})
        self.sub.update({s.symbol: v for s, v in zip(m.switches.values(), self.sw)})
        self.sub[t] = sp.Symbol("t", real=True)

    def local(self, expr: sp.Expr) -> sp.Expr:
        return real_powers(self.model.expand(expr).xreplace(self.sub))

    def unpack(self, which: str) -> list[str]:
        lines = []
        if "y" in which:
            lines += [f"{s} = y[{i}]" for i, s in enumerate(self.x)]
        if "p" in which:
            lines += [f"{s} = p[{i}]" for i, s in enumerate(self.p)]
        if "s" in which:
            lines += [f"{s} = sw[{i}]" for i, s in enumerate(self.sw)]
        return lines


def _block(outputs: list[tuple[str, sp.Expr]]) -> list[str]:
    """CSE over all outputs, then ``target = expr`` lines (zeros are skipped)."""
    printer = _printer()
    nonzero = [(target, e) for target, e in outputs if e != 0]
    if not nonzero:
        return []
    reps, reduced = sp.cse(
        [e for _, e in nonzero], symbols=sp.numbered_symbols("_c"), optimizations="basic"
    )
    lines = [f"{s} = {printer.doprint(e)}" for s, e in reps]
    lines += [f"{target} = {printer.doprint(e)}" for (target, _), e in zip(nonzero, reduced)]
    return lines


def _function(name: str, args: str, doc: str, body: list[str]) -> str:
    inner = textwrap.indent("\n".join([f'"""{doc}"""', *body]), "    ")
    return f"@_jit\ndef {name}({args}):\n{inner}\n"


@dataclass(frozen=True)
class Derivatives:
    """The symbolic quantities a compiled model needs, in local-variable form."""

    f: sp.Matrix
    J: sp.Matrix
    dfdp: sp.Matrix
    h: sp.Matrix
    dhdx: sp.Matrix
    dhdp: sp.Matrix
    x0: sp.Matrix
    dx0dp: sp.Matrix
    tau: sp.Matrix
    dtaudp: sp.Matrix


def derive(model: Model, syms: _Symbols) -> Derivatives:
    """Symbolic right-hand side, Jacobians and parameter derivatives of ``model``."""
    rhs = model.rhs(expand=True)
    f = sp.Matrix([real_powers(rhs[n].xreplace(syms.sub)) for n in model.states])
    X, P = sp.Matrix(syms.x), sp.Matrix(syms.p)
    h = sp.Matrix([syms.local(o.expr) for o in model.observables.values()])
    x0 = sp.Matrix([syms.local(s.initial) for s in model.states.values()])
    tau = sp.Matrix([syms.local(s.at) for s in model.switches.values()])

    def jac(v: sp.Matrix, wrt: sp.Matrix) -> sp.Matrix:
        if v.rows == 0 or wrt.rows == 0:
            return sp.zeros(v.rows, wrt.rows)
        return v.jacobian(wrt)

    return Derivatives(
        f, jac(f, X), jac(f, P), h, jac(h, X), jac(h, P), x0, jac(x0, P), tau, jac(tau, P)
    )


def generate_source(model: Model, header: str, use_numba: bool) -> str:
    """The full text of the generated module for ``model``."""
    syms = _Symbols(model)
    d = derive(model, syms)
    n, npar, no, ns = (
        len(model.states),
        len(model.parameters),
        len(model.observables),
        len(model.switches),
    )
    unpack_all = syms.unpack("yps")

    def vec(name: str, m: sp.Matrix) -> list[tuple[str, sp.Expr]]:
        return [(f"{name}[{i}]", m[i]) for i in range(m.rows)]

    def mat(name: str, m: sp.Matrix) -> list[tuple[str, sp.Expr]]:
        return [(f"{name}[{i}, {j}]", m[i, j]) for i in range(m.rows) for j in range(m.cols)]

    funcs: list[str] = []
    funcs.append(
        _function(
            "rhs",
            "y, t, p, sw",
            "dx/dt, shape (n,).",
            [*unpack_all, f"out = np.zeros({n})", *_block(vec("out", d.f)), "return out"],
        )
    )
    funcs.append(
        _function(
            "jac",
            "y, t, p, sw",
            "df/dx, shape (n, n).",
            [*unpack_all, f"out = np.zeros(({n}, {n}))", *_block(mat("out", d.J)), "return out"],
        )
    )
    funcs.append(
        _function(
            "jac_solver",
            "y, t, p, sw",
            "df/dx for the integrator's Newton iteration (non-finite -> 0).",
            ["return _finite_or_zero(jac(y, t, p, sw))"],
        )
    )
    funcs.append(
        _function(
            "dfdp",
            "y, t, p, sw",
            "df/dp, shape (n, np).",
            [
                *unpack_all,
                f"out = np.zeros(({n}, {npar}))",
                *_block(mat("out", d.dfdp)),
                "return out",
            ],
        )
    )
    jac_lines = [
        f"{line.split(' = ', 1)[0]} = _finite({line.split(' = ', 1)[1]})"
        if line.startswith("J[")
        else line
        for line in _block(mat("J", d.J) + mat("Fp", d.dfdp))
    ]
    funcs.append(
        _function(
            "jac_dfdp_into",
            "y, t, p, sw, J, Fp",
            "df/dx (non-finite -> 0, as jac_solver) into J (n, n) and df/dp into Fp (n, np), "
            "sharing subexpressions and allocating nothing (the BDF sensitivity corrector).",
            [*unpack_all, "J[:, :] = 0.0", "Fp[:, :] = 0.0", *jac_lines],
        )
    )
    nonzero_J = [(i, j) for i in range(n) for j in range(n) if d.J[i, j] != 0]
    J_locals = [(f"J_{i}_{j}", d.J[i, j]) for i, j in nonzero_J]
    sens_rows = []
    for i in range(n):
        terms = [f"_mul(J_{i}_{j}, y[b + {j}])" for (r, j) in nonzero_J if r == i]
        sens_rows.append(f"    out[b + {i}] = {' + '.join(terms) if terms else '0.0'}")
    D_rows = [i for i in range(n) if any(d.dfdp[i, j] != 0 for j in range(npar))]
    funcs.append(
        _function(
            "sens_rhs",
            "y, t, p, sw, pidx",
            "Augmented RHS [f, J s_k + df/dp_k]; directions beyond len(pidx) are initial values."
            " Unrolled over the symbolic sparsity of J.",
            [
                *unpack_all,
                "out = np.zeros(y.shape[0])",
                f"D = np.zeros(({n}, {npar}))",
                *_block(vec("out", d.f) + J_locals + mat("D", d.dfdp)),
                f"for k in range((y.shape[0] - {n}) // {n}):",
                f"    b = {n} * (k + 1)",
                *sens_rows,
                "for k in range(pidx.shape[0]):",
                f"    b = {n} * (k + 1)",
                "    j = pidx[k]",
                *[f"    out[b + {i}] += D[{i}, j]" for i in D_rows],
                "return out",
            ],
        )
    )
    funcs.append(
        _function(
            "sens_jac_banded",
            "y, t, p, sw, pidx",
            "Block-diagonal Jacobian of the augmented system in LSODA banded layout "
            f"(ml = mu = {n - 1}); the coupling d(J s)/dx is left out, as in CVODES.",
            [
                *unpack_all,
                *_block(J_locals),
                f"out = np.zeros(({2 * n - 1}, y.shape[0]))",
                f"for b in range(0, y.shape[0], {n}):",
                *[f"    out[{n - 1 + i - j}, b + {j}] = _finite(J_{i}_{j})" for i, j in nonzero_J],
                *(["    pass  # the Jacobian is zero"] if not nonzero_J else []),
                "return out",
            ],
        )
    )
    funcs.append(
        _function(
            "observables",
            "y, t, p, sw",
            "h(x, p), shape (no,).",
            [*unpack_all, f"out = np.zeros({no})", *_block(vec("out", d.h)), "return out"],
        )
    )
    funcs.append(
        _function(
            "observables_dx",
            "y, t, p, sw",
            "dh/dx, shape (no, n).",
            [
                *unpack_all,
                f"out = np.zeros(({no}, {n}))",
                *_block(mat("out", d.dhdx)),
                "return out",
            ],
        )
    )
    funcs.append(
        _function(
            "observables_dp",
            "y, t, p, sw",
            "dh/dp, shape (no, np).",
            [
                *unpack_all,
                f"out = np.zeros(({no}, {npar}))",
                *_block(mat("out", d.dhdp)),
                "return out",
            ],
        )
    )
    funcs.append(
        _function(
            "observe_all",
            "Y, T, p, SW",
            "Observables at every row, (nt, no).",
            [
                f"out = np.zeros((Y.shape[0], {no}))",
                "for r in range(Y.shape[0]):",
                "    out[r, :] = observables(Y[r], T[r], p, SW[r])",
                "return out",
            ],
        )
    )
    funcs.append(
        _function(
            "observe_sens_all",
            "Y, T, p, SW, S, pidx",
            "Observable sensitivities dh/dx S + dh/dp at every row; S is (nt, n, nsens), "
            "returns (nt, no, nsens).",
            [
                f"out = np.zeros((Y.shape[0], {no}, S.shape[2]))",
                "for r in range(Y.shape[0]):",
                "    hx = observables_dx(Y[r], T[r], p, SW[r])",
                "    hp = observables_dp(Y[r], T[r], p, SW[r])",
                f"    for o in range({no}):",
                "        for k in range(S.shape[2]):",
                "            acc = 0.0",
                f"            for i in range({n}):",
                "                acc += _mul(hx[o, i], S[r, i, k])",
                "            if k < pidx.shape[0]:",
                "                acc += hp[o, pidx[k]]",
                "            out[r, o, k] = acc",
                "return out",
            ],
        )
    )
    unpack_p = syms.unpack("p")
    funcs.append(
        _function(
            "initial",
            "p",
            "x(t0), shape (n,).",
            [*unpack_p, f"out = np.zeros({n})", *_block(vec("out", d.x0)), "return out"],
        )
    )
    funcs.append(
        _function(
            "initial_dp",
            "p",
            "dx(t0)/dp, shape (n, np).",
            [
                *unpack_p,
                f"out = np.zeros(({n}, {npar}))",
                *_block(mat("out", d.dx0dp)),
                "return out",
            ],
        )
    )
    funcs.append(
        _function(
            "switch_times",
            "p",
            "Switch times, shape (ns,).",
            [*unpack_p, f"out = np.zeros({ns})", *_block(vec("out", d.tau)), "return out"],
        )
    )
    funcs.append(
        _function(
            "switch_times_dp",
            "p",
            "d(switch time)/dp, shape (ns, np).",
            [
                *unpack_p,
                f"out = np.zeros(({ns}, {npar}))",
                *_block(mat("out", d.dtaudp)),
                "return out",
            ],
        )
    )

    if use_numba:
        jit = "from numba import njit\n\n_jit = njit(cache=True, error_model='numpy', nogil=True)\n"
    else:
        jit = "\ndef _jit(func):\n    return func\n"
    preamble = (
        f"{header}\n# flake8: noqa\n# ruff: noqa\nimport math\n\nimport numpy as np\n"
        f"{jit}\n"
        f"N_STATES = {n}\nN_PARAMETERS = {npar}\nN_OBSERVABLES = {no}\n"
        f"N_SWITCHES = {ns}\n"
        f"STATES = {list(model.states)!r}\nPARAMETERS = {list(model.parameters)!r}\n"
        f"OBSERVABLES = {list(model.observables)!r}\n"
        f"SWITCHES = {list(model.switches)!r}\n"
    )
    return preamble + HELPERS + "\n\n" + "\n\n".join(funcs) + "\n\n" + INTEGRATOR_SOURCE
