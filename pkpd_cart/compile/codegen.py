"""Generate plain Python source for a model's numeric functions.

The generated module holds only the model's own functions, one per row of
:data:`GENERATED`, in the order of the table of
:mod:`pkpd_cart.compile.kernels.model_calls`. Each is a straight-line block of common
subexpressions (``sympy.cse``) followed by assignments to an output buffer, with one
calling convention, ``fn(y, t, p, sw, out, out2)``:

* ``y`` state vector (n,), ``t`` time, ``p`` parameters (np,), ``sw`` switch flags (ns,);
* ``out`` (and ``out2``) the outputs: vectors written whole, derivative matrices at their
  structural non-zeros only (the caller zeroes them once; see :data:`GENERATED`).

``jac_dfdp`` alone takes a seventh argument, ``sel`` (np,): it writes df/dp column ``k``
only where ``sel[k]`` is non-zero, and computes the subexpressions that only that column
needs only then. The integrator asks for the columns of its sensitivity directions.

Under numba each function is a ``cfunc`` (C pointers in, cached on disk) that the shared
integrator calls through its address; in pure Python the same text runs on arrays. The
integrator and everything model-independent live in :mod:`pkpd_cart.compile.kernels`.
"""

from __future__ import annotations

import functools
import hashlib
import textwrap
from dataclasses import dataclass
from pathlib import Path

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from pkpd_cart.compile.sparse_lu import lu_program, python_source
from pkpd_cart.model.modelling import Model, rebuild, t

# Part of the cache key: a changed generator (these files) or kernel (the table layout,
# the helpers generated code calls) never reuses a stale module.
CODEGEN_VERSION = hashlib.sha256(
    b"".join(
        (Path(__file__).parent / name).read_bytes()
        for name in ("codegen.py", "native.py", "sparse_lu.py")
    )
    + b"".join(p.read_bytes() for p in sorted((Path(__file__).parent / "kernels").glob("*.py")))
).hexdigest()[:16]


@dataclass(frozen=True)
class GeneratedFunction:
    name: str
    doc: str
    selects: bool = False  # takes the column flags ``sel`` (np) as a seventh argument


# In the order of kernels.model_calls (RHS, JAC, JAC_DFDP, ...). Vector outputs are written
# whole; matrix outputs (the derivatives) only at their structural non-zeros, so callers
# pass them zeroed, and a buffer kept for the same function stays valid: df/dp of sle_cart
# has 680 entries of which 79 are non-zero, and rewriting the zeros at every step cost
# about 5% of a sensitivity run and a third of the LLVM compile time.
GENERATED = (
    GeneratedFunction("rhs", "dx/dt into out (n)"),
    GeneratedFunction("jac", "df/dx into out (n, n)"),
    GeneratedFunction(
        "jac_dfdp",
        "df/dx (non-finite -> 0) into out (n, n), df/dp into out2 (n, np) at the columns k "
        "with sel[k] != 0",
        selects=True,
    ),
    GeneratedFunction("obs", "observables h(x, p) into out (no)"),
    GeneratedFunction("obs_d", "dh/dx into out (no, n), dh/dp into out2 (no, np)"),
    GeneratedFunction("x0", "initial states into out (n), from p"),
    GeneratedFunction("x0_dp", "dx0/dp into out (n, np), from p"),
    GeneratedFunction("tau", "switch times into out (ns), from p"),
    GeneratedFunction("tau_dp", "d(switch time)/dp into out (ns, np), from p"),
    # written from the Jacobian's structure, not from expressions (see sparse_lu)
    GeneratedFunction("lu", "LU of I - c J: factors into out, accepted (1.0) into out2[0]"),
    GeneratedFunction("lu_solve", "solve with the factors in x for out[0], out[s], ..."),
    GeneratedFunction("lu_solve4", "the same for 4 adjacent right-hand sides at once"),
)


_DOCS = {g.name: g.doc for g in GENERATED}


def written_whole(shape: tuple[int, ...]) -> bool:
    """Whether an output of this shape is written entirely (a vector) or only at its
    structural non-zeros (a derivative matrix), as every backend writes them."""
    return len(shape) == 1


class FPow(sp.Function):
    """Real power ``b**e`` with a non-integer exponent, differentiated safely and cheaply.

    Its derivatives reuse the power itself, so that a Jacobian costs no further ``pow``:
    ``d/db b**e = e * b**e / b`` (:class:`FPowOver`) and ``d/de b**e = b**e * log(b)``
    (:class:`FPowLog`, whose naive value 0 * -inf = nan at ``b = 0`` is replaced by its
    limit 0, for e > 0).
    """

    def fdiff(self, argindex=1):
        b, e = self.args
        if argindex == 1:
            return e * FPowOver(self, b, e)
        return FPowLog(self, b)


class FPowOver(sp.Function):
    """``b**(e - 1)`` from ``P = b**e``: ``P / b``, or ``pow`` itself where that quotient
    is not ``b**(e - 1)`` (b zero or not finite, P not finite). Arguments ``(P, b, e)``."""

    def fdiff(self, argindex=1):  # only for derivatives of order two (b != 0)
        P, b, _ = self.args
        return (1 / b, -P / b**2, sp.Integer(0))[argindex - 1]


class FPowLog(sp.Function):
    """``P * log(b)`` for ``P = b**e``, with its limit 0 at ``b = 0``. Arguments ``(P, b)``."""

    def fdiff(self, argindex=1):
        P, b = self.args
        return sp.log(b) if argindex == 1 else P / b


def _real_power(e: sp.Basic) -> sp.Basic:
    return FPow(e.base, e.exp) if e.is_Pow and not e.exp.is_Integer else e


def real_powers(expr: sp.Expr, mapping: dict | None = None) -> sp.Expr:
    """``expr`` with ``mapping`` substituted and non-integer powers replaced by
    :class:`FPow`, so that derivatives stay finite at 0."""
    return rebuild(expr, mapping or {}, _real_power)


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

    def _print_FPowOver(self, expr):
        return f"_fpow_over({', '.join(self._print(a) for a in expr.args)})"

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

    def _print_Subs(self, expr):  # (derivatives of floor/ceiling are 0 before CSE: derive)
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
        return real_powers(self.model.expand(expr), self.sub)

    def unpack(self, which: str) -> list[str]:
        lines = []
        if "y" in which:
            lines += [f"{s} = y[{i}]" for i, s in enumerate(self.x)]
        if "p" in which:
            lines += [f"{s} = p[{i}]" for i, s in enumerate(self.p)]
        if "s" in which:
            lines += [f"{s} = sw[{i}]" for i, s in enumerate(self.sw)]
        return lines


@dataclass(frozen=True)
class Block:
    """One generated function, independent of the language it is written in.

    ``inputs`` says which vectors it reads (``y`` states, ``p`` parameters, ``s`` switch
    flags); ``outputs`` names its buffers and their shapes (``out``, then ``out2``);
    ``temporaries`` are the common subexpressions in order; ``stores`` assign every
    non-zero output entry, wrapped in ``finite -> 0`` where flagged. The other entries of
    a vector output are written as 0; those of a matrix output are left as they are
    (see :data:`GENERATED`). A function that ``selects`` takes the column flags ``sel``;
    its ``columns`` hold, per non-zero column ``k`` of ``out2``, the temporaries that
    column alone needs and its stores, run only where ``sel[k]`` is non-zero.
    """

    name: str
    doc: str
    inputs: str
    outputs: tuple[tuple[str, tuple[int, ...]], ...]
    temporaries: tuple[tuple[sp.Symbol, sp.Expr], ...]
    stores: tuple[tuple[str, tuple[int, ...], sp.Expr, bool], ...]
    columns: tuple[ColumnGroup, ...] = ()
    selects: bool = False  # takes ``sel`` (np): set by _by_column, for GENERATED's ``selects``


@dataclass(frozen=True)
class ColumnGroup:
    """Column ``k`` of ``out2`` in a function that selects its columns: the temporaries
    no other part of the function needs, then the column's stores."""

    k: int
    temporaries: tuple[tuple[sp.Symbol, sp.Expr], ...]
    stores: tuple[tuple[str, tuple[int, ...], sp.Expr, bool], ...]


def _cse_block(name, doc, inputs, outputs, entries, finite_in=()) -> Block:
    """CSE over all non-zero ``entries`` (``(buffer, index, expr)``).

    sympy's default CSE, without its "basic" pre-optimisations (factoring terms), which
    took three quarters of the generation time of larger models for the same code speed.
    """
    nonzero = [(buf, idx, e) for buf, idx, e in entries if e != 0]
    reps, reduced = (
        sp.cse([e for *_, e in nonzero], symbols=sp.numbered_symbols("_c")) if nonzero else ([], [])
    )
    stores = tuple((buf, idx, e, buf in finite_in) for (buf, idx, _), e in zip(nonzero, reduced))
    return Block(name, doc, inputs, tuple(outputs), tuple(reps), stores)


def _part(block: Block, name: str, buffer: str, outputs) -> Block:
    """The function writing only ``buffer`` of ``block`` (without finiteness guards): its
    stores, and the temporaries they need, in their order."""
    stores = tuple((b, idx, e, False) for b, idx, e, _ in block.stores if b == buffer)
    needed = set().union(*(e.free_symbols for *_, e, _ in stores))
    kept = []
    for symbol, expr in reversed(block.temporaries):
        if symbol in needed:
            kept.append((symbol, expr))
            needed |= expr.free_symbols
    return Block(name, _DOCS[name], block.inputs, tuple(outputs), tuple(reversed(kept)), stores)


def _by_column(block: Block, buffer: str) -> Block:
    """``block`` with the stores of ``buffer`` grouped by column (see :class:`Block`).

    A temporary that the other stores need stays in the common part; one that only columns
    need goes into the group of each of them (a few are needed by two or three columns:
    computing them again there cost less than computing them always). The integrator asks
    for a few columns of df/dp (the random effects of a population fit), and the others,
    say those of Hill exponents with their logarithms, cost as much as J itself.
    """
    common = [st for st in block.stores if st[0] != buffer]
    columns: dict[int, list] = {}
    for st in block.stores:
        if st[0] == buffer:
            columns.setdefault(st[1][1], []).append(st)
    # the users of each temporary: "common", or the set of columns, through the chain
    users: dict[sp.Symbol, set] = {}
    defined = {symbol for symbol, _ in block.temporaries}

    def mark(expr: sp.Expr, user) -> None:
        for s in expr.free_symbols & defined:
            users.setdefault(s, set()).add(user)

    for *_, e, _ in common:
        mark(e, "common")
    for k, stores in columns.items():
        for *_, e, _ in stores:
            mark(e, k)
    for symbol, expr in reversed(block.temporaries):  # users of a temporary use its inputs
        for user in users.get(symbol, ()):
            mark(expr, user)
    shared, own = [], {k: [] for k in columns}
    for symbol, expr in block.temporaries:
        who = users.get(symbol, set())
        if "common" in who:
            shared.append((symbol, expr))
        else:  # in each column that needs it: computed only for the columns selected
            for k in who:
                own[k].append((symbol, expr))
    groups = tuple(ColumnGroup(k, tuple(own[k]), tuple(columns[k])) for k in sorted(columns))
    return Block(
        block.name,
        block.doc,
        block.inputs,
        block.outputs,
        tuple(shared),
        tuple(common),
        groups,
        selects=True,
    )


def lower(model: Model) -> tuple[_Symbols, list[Block], dict[str, list[list[int]]]]:
    """The model's generated functions as :class:`Block` s, in :data:`GENERATED` order,
    and the structural non-zeros of its derivatives (:func:`patterns`)."""
    syms, d = _derived(model)
    n, npar, no, ns = (
        len(model.states),
        len(model.parameters),
        len(model.observables),
        len(model.switches),
    )

    def vec(buf: str, m: sp.Matrix):
        return [(buf, (i,), m[i]) for i in range(m.rows)]

    def mat(buf: str, m: sp.Matrix):
        return [(buf, (i, j), m[i, j]) for i in range(m.rows) for j in range(m.cols)]

    spec = {
        "rhs": ("yps", [("out", (n,))], vec("out", d.f), ()),
        "jac_dfdp": (
            "yps",
            [("out", (n, n)), ("out2", (n, npar))],
            mat("out", d.J) + mat("out2", d.dfdp),
            ("out",),
        ),
        "obs": ("yps", [("out", (no,))], vec("out", d.h), ()),
        "obs_d": (
            "yps",
            [("out", (no, n)), ("out2", (no, npar))],
            mat("out", d.dhdx) + mat("out2", d.dhdp),
            (),
        ),
        "x0": ("p", [("out", (n,))], vec("out", d.x0), ()),
        "x0_dp": ("p", [("out", (n, npar))], mat("out", d.dx0dp), ()),
        "tau": ("p", [("out", (ns,))], vec("out", d.tau), ()),
        "tau_dp": ("p", [("out", (ns, npar))], mat("out", d.dtaudp), ()),
    }
    blocks = {name: _cse_block(name, _DOCS[name], *spec[name]) for name in spec}
    # J is a part of jac_dfdp: its block is that one's, cut down (a second CSE of the same
    # entries took a quarter of sle_cart's CSE time)
    blocks["jac"] = _part(blocks["jac_dfdp"], "jac", "out", [("out", (n, n))])
    blocks = [
        _by_column(blocks[g.name], "out2") if g.selects else blocks[g.name]
        for g in GENERATED
        if g.name in blocks
    ]
    return syms, blocks, patterns(d)


def patterns(d: Derivatives) -> dict[str, list[list[int]]]:
    """Structural non-zeros ``[row, column]`` of df/dx, df/dp, dx0/dp and dtau/dp.

    Stored with the generated code, they tell the integrator which sensitivities are zero
    for all time (:func:`pkpd_cart.simulation.structure.sensitivity_columns`).
    """

    def nonzero(m: sp.Matrix) -> list[list[int]]:
        return [[i, j] for i in range(m.rows) for j in range(m.cols) if m[i, j] != 0]

    return {"J": nonzero(d.J), "dfdp": nonzero(d.dfdp), "dx0dp": nonzero(d.dx0dp),
            "dtaudp": nonzero(d.dtaudp)}  # fmt: skip


def _python_function(block: Block, syms: _Symbols, sizes: dict[str, tuple[int]]) -> str:
    printer = _printer()
    names = {"y": "y", "p": "p", "s": "sw"}
    body = [f'"""{block.doc}"""']
    body += [f"{names[c]} = _arr({names[c]}_, {sizes[names[c]]!r})" for c in block.inputs]
    body += syms.unpack(block.inputs)
    for buf, shape in block.outputs:
        body.append(f"{buf} = _arr({buf}_, {shape!r})")
        if written_whole(shape):
            body.append(f"{buf}[:] = 0.0")
    if block.selects:
        body.append(f"sel = _arr(sel_, {sizes['p']!r})")

    def assignments(temporaries, stores) -> list[str]:
        lines = [f"{s} = {printer.doprint(e)}" for s, e in temporaries]
        for buf, idx, e, finite in stores:
            value = printer.doprint(e)
            lines.append(
                f"{buf}[{', '.join(map(str, idx))}] = " + (f"_finite({value})" if finite else value)
            )
        return lines

    body += assignments(block.temporaries, block.stores)
    for group in block.columns:
        body.append(f"if sel[{group.k}] != 0.0:")
        body += ["    " + line for line in assignments(group.temporaries, group.stores)]
    inner = textwrap.indent("\n".join(body), "    ")
    if block.selects:
        return f"@_model_selects\ndef {block.name}(y_, t, p_, sw_, out_, out2_, sel_):\n{inner}\n"
    return f"@_model\ndef {block.name}(y_, t, p_, sw_, out_, out2_):\n{inner}\n"


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


def _is_step_derivative(e: sp.Basic) -> bool:
    """d floor(g)/dx or d ceiling(g)/dx, plain or as sympy's Subs form."""
    if isinstance(e, sp.Subs):
        e = e.expr
    return isinstance(e, sp.Derivative) and isinstance(e.expr, (sp.floor, sp.ceiling))


def _without_step_derivatives(e: sp.Expr) -> sp.Expr:
    """floor and ceiling are piecewise constant: their derivatives are 0 (set before CSE,
    which would otherwise pull floor(g) out of its Derivative)."""
    if not e.has(sp.Derivative):
        return e
    return e.replace(_is_step_derivative, lambda _: sp.Integer(0))


class Differentiator:
    """``d(expr)/d(variable)`` by the chain rule in one pass over the expression tree, each
    shared subexpression once (call it on every entry of a vector).

    Sums, products, constant powers and functions whose derivative is the generic chain
    rule over ``fdiff`` are differentiated here; anything else (a ``Piecewise``, ``Abs``,
    a power with the variable in its exponent) by sympy's ``diff``. The result is the same
    expression sympy's ``diff`` builds, up to the order of factors; going through
    ``Derivative`` for every node, sympy took five times as long (``sle_cart``: 0.25 s for
    the Jacobian and df/dp).
    """

    def __init__(self, variable: sp.Symbol):
        self.variable = variable
        self.done: dict[sp.Basic, sp.Expr] = {}

    def __call__(self, e: sp.Basic) -> sp.Expr:
        done = self.done.get(e)
        if done is None:
            done = self.done[e] = self._derivative(e)
        return done

    def _derivative(self, e: sp.Basic) -> sp.Expr:
        x = self.variable
        if e == x:
            return sp.S.One
        if not e.args:
            return sp.S.Zero
        if e.is_Add:
            return sp.Add(*[self(a) for a in e.args])
        if e.is_Mul:
            args = e.args
            terms = []
            for i, a in enumerate(args):
                da = self(a)
                if da != 0:
                    terms.append(sp.Mul(*args[:i], da, *args[i + 1 :]))
            return sp.Add(*terms)
        if e.is_Pow and self(e.exp) == 0:
            base, exp = e.args
            db = self(base)
            return sp.S.Zero if db == 0 else exp * base ** (exp - 1) * db
        if isinstance(e, sp.Function) and type(e)._eval_derivative is sp.Function._eval_derivative:
            terms = []
            for i, a in enumerate(e.args):
                da = self(a)
                if da != 0:
                    terms.append(e.fdiff(i + 1) * da)
            return sp.Add(*terms)
        return e.diff(x) if x in e.free_symbols else sp.S.Zero


@functools.lru_cache(maxsize=4)
def _derived(model: Model) -> tuple[_Symbols, Derivatives]:
    """The model's symbols and derivatives, kept for the next lowering of the same model
    (by the ``numba`` backend, when the ``llvm`` one falls back to it)."""
    syms = _Symbols(model)
    return syms, derive(model, syms)


def derive(model: Model, syms: _Symbols) -> Derivatives:
    """Symbolic right-hand side, Jacobians and parameter derivatives of ``model``."""
    rhs = model.rhs(expand=True)
    f = sp.Matrix([real_powers(rhs[n], syms.sub) for n in model.states])
    X, P = sp.Matrix(syms.x), sp.Matrix(syms.p)
    h = sp.Matrix([syms.local(o.expr) for o in model.observables.values()])
    x0 = sp.Matrix([syms.local(s.initial) for s in model.states.values()])
    tau = sp.Matrix([syms.local(s.at) for s in model.switches.values()])

    def jac(v: sp.Matrix, wrt: sp.Matrix) -> sp.Matrix:
        out = sp.zeros(v.rows, wrt.rows)
        for j in range(wrt.rows):
            derivative = Differentiator(wrt[j])  # one per variable: shared subexpressions
            for i in range(v.rows):
                out[i, j] = _without_step_derivatives(derivative(v[i]))
        return out

    return Derivatives(
        f, jac(f, X), jac(f, P), h, jac(h, X), jac(h, P), x0, jac(x0, P), tau, jac(tau, P)
    )


def generate_source(model: Model, header: str, use_numba: bool) -> str:
    """The full text of the generated module for ``model`` (numba or pure Python)."""
    syms, blocks, structure = lower(model)
    n, npar, no, ns = (
        len(model.states),
        len(model.parameters),
        len(model.observables),
        len(model.switches),
    )
    sizes = {"y": (n,), "p": (npar,), "sw": (ns,)}
    funcs = [_python_function(b, syms, sizes) for b in blocks]
    funcs.append(python_source(lu_program(n, structure["J"])))
    if use_numba:
        backend = (
            "from numba import carray as _arr, cfunc\n\n"
            "from pkpd_cart.compile.kernels.jit import SIGNATURE, SIGNATURE_SELECTS\n"
            "from pkpd_cart.compile.kernels.mathfns import *\n\n"
            "_model = cfunc(SIGNATURE, cache=True, error_model='numpy')\n"
            "_model_selects = cfunc(SIGNATURE_SELECTS, cache=True, error_model='numpy')\n"
        )
    else:
        backend = (
            "from pkpd_cart.compile.kernels.pure.mathfns import *\n\n\n"
            "def _model(func):\n    return func\n\n\n"
            "_model_selects = _model\n\n\n"
            "def _arr(a, shape):\n"
            "    size = 1\n    for k in shape:\n        size *= k\n"
            "    return a.reshape(-1)[:size].reshape(shape)\n"
        )
    preamble = (
        f"{header}\n# flake8: noqa\n# ruff: noqa\nimport math\n\nimport numpy as np\n"
        f"{backend}\n"
        f"N_STATES = {n}\nN_PARAMETERS = {npar}\nN_OBSERVABLES = {no}\n"
        f"N_SWITCHES = {ns}\n"
        f"STATES = {list(model.states)!r}\nPARAMETERS = {list(model.parameters)!r}\n"
        f"OBSERVABLES = {list(model.observables)!r}\n"
        f"SWITCHES = {list(model.switches)!r}\n"
        f"PATTERNS = {structure!r}\n"
    )
    return preamble + "\n\n" + "\n\n".join(funcs)
