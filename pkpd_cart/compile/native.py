"""The ``llvm`` backend: a model's functions written directly as LLVM IR and compiled by
llvmlite (numba's own code generator), without numba's typing and lowering passes.

A model's functions are straight-line floating-point code. numba spends seconds typing
and lowering a few hundred such lines (``sle_cart``: about 6 s); LLVM compiles their IR in
a small fraction of that. The functions have the C signature of
:data:`pkpd_cart.compile.kernels.jit.SIGNATURE` and are called by the shared, numba-compiled
integrator through their addresses, exactly as the ``numba`` backend's ``cfunc`` s.

Expressions map onto LLVM instructions and the C math library with the semantics of the
other backends: ``pow`` and ``log`` return nan or -inf instead of raising, ``0 * inf`` in
``_finite`` entries becomes 0, ``Max``/``Min``/``Piecewise`` are selects. An expression
outside the supported set raises :class:`UnsupportedExpressionError`, and the model is
then compiled by the ``numba`` backend instead (same results, slower to build).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
from types import SimpleNamespace

import sympy as sp
from llvmlite import ir

from pkpd_cart.compile import sparse_lu
from pkpd_cart.compile.codegen import (
    GENERATED,
    Block,
    FPow,
    FPowLog,
    FPowOver,
    _Symbols,
    lower,
    written_whole,
)
from pkpd_cart.model.modelling import t as time_symbol

# The derivatives' structural non-zeros travel with the IR as one comment line.
PATTERNS_TAG = "; pkpd_cart patterns: "
DOUBLE = ir.DoubleType()
PTR = DOUBLE.as_pointer()
FUNCTION_TYPE = ir.FunctionType(ir.VoidType(), [PTR, DOUBLE, PTR, PTR, PTR, PTR])
# jac_dfdp: the column flags sel as a seventh argument (kernels.jit.SIGNATURE_SELECTS)
FUNCTION_TYPE_SELECTS = ir.FunctionType(ir.VoidType(), [PTR, DOUBLE, PTR, PTR, PTR, PTR, PTR])

# sympy function -> C math library function of one double
_UNARY_C = {
    sp.exp: "exp",
    sp.sin: "sin",
    sp.cos: "cos",
    sp.tan: "tan",
    sp.asin: "asin",
    sp.acos: "acos",
    sp.atan: "atan",
    sp.sinh: "sinh",
    sp.cosh: "cosh",
    sp.tanh: "tanh",
    sp.asinh: "asinh",
    sp.acosh: "acosh",
    sp.atanh: "atanh",
    sp.gamma: "tgamma",
    sp.loggamma: "lgamma",
    sp.erf: "erf",
    sp.erfc: "erfc",
}
_COMPARE = {
    sp.StrictLessThan: "<",
    sp.LessThan: "<=",
    sp.StrictGreaterThan: ">",
    sp.GreaterThan: ">=",
    sp.Equality: "==",
    sp.Unequality: "!=",
}


def _c_function(module: ir.Module, name: str, n_args: int) -> ir.Function:
    """The module's declaration of the C math library function ``name`` of doubles."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    fn = ir.Function(module, ir.FunctionType(DOUBLE, [DOUBLE] * n_args), name)
    fn.attributes.add("nounwind")
    return fn


def _helper(module: ir.Module, build) -> ir.Function:
    """The module's internal helper function made by ``build`` (one per module; the
    builder's name is the function's)."""
    return module.globals.get(build.__name__) or build(module)


def pkpd_real_power(module: ir.Module) -> ir.Function:
    """``pow`` with the exponents 1, 2 and 0 answered without the library call (``b``,
    ``b * b``, 1: the values ``pow`` returns), as ``mathfns._fpow`` of the other backends;
    a constant exponent folds the tests away once LLVM inlines this."""
    fn = ir.Function(module, ir.FunctionType(DOUBLE, [DOUBLE, DOUBLE]), "pkpd_real_power")
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    base, exponent = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    for value, result in (
        (1.0, lambda b: base),
        (2.0, lambda b: b.fmul(base, base)),
        (0.0, lambda b: ir.Constant(DOUBLE, 1.0)),
    ):
        special = fn.append_basic_block(f"exponent_{value:g}")
        other = fn.append_basic_block(f"not_{value:g}")
        builder.cbranch(
            builder.fcmp_ordered("==", exponent, ir.Constant(DOUBLE, value)), special, other
        )
        builder.position_at_end(special)
        builder.ret(result(builder))
        builder.position_at_end(other)
    builder.ret(builder.call(_c_function(module, "pow", 2), [base, exponent]))
    return fn


def pkpd_power_over(module: ir.Module) -> ir.Function:
    """``b**(e - 1)`` from ``P = b**e`` (:class:`codegen.FPowOver`): ``P / b`` where b is
    non-zero and finite and P finite, else the real power itself, as ``mathfns._fpow_over``."""
    fn = ir.Function(module, ir.FunctionType(DOUBLE, [DOUBLE] * 3), "pkpd_power_over")
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    power, base, exponent = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    fabs = module.declare_intrinsic("llvm.fabs", [DOUBLE])
    infinity, zero = ir.Constant(DOUBLE, float("inf")), ir.Constant(DOUBLE, 0.0)
    magnitude = builder.call(fabs, [base])
    usable = builder.and_(
        builder.and_(
            builder.fcmp_ordered(">", magnitude, zero),
            builder.fcmp_ordered("<", magnitude, infinity),
        ),
        builder.fcmp_ordered("<", builder.call(fabs, [power]), infinity),
    )
    quotient, other = fn.append_basic_block("quotient"), fn.append_basic_block("power")
    builder.cbranch(usable, quotient, other)
    builder.position_at_end(quotient)
    builder.ret(builder.fdiv(power, base))
    builder.position_at_end(other)
    exponent_less_one = builder.fsub(exponent, ir.Constant(DOUBLE, 1.0))
    builder.ret(builder.call(_helper(module, pkpd_real_power), [base, exponent_less_one]))
    return fn


class UnsupportedExpressionError(Exception):
    """An expression the LLVM emitter does not translate (the numba backend is used)."""


class _Emitter:
    """Emits one function body: sympy expressions to SSA values."""

    def __init__(self, module: ir.Module, builder: ir.IRBuilder, values: dict):
        self.module, self.b, self.values = module, builder, values

    def _intrinsic(self, name: str, *args):
        fn = self.module.declare_intrinsic(name, [DOUBLE])
        return self.b.call(fn, list(args))

    def c_call(self, name: str, *args):
        return self.b.call(_c_function(self.module, name, len(args)), list(args))

    def real_power(self, base, exponent):
        """``pow(base, exponent)`` through :func:`pkpd_real_power`."""
        return self.b.call(_helper(self.module, pkpd_real_power), [base, exponent])

    def const(self, value: float):
        return ir.Constant(DOUBLE, float(value))

    def select(self, condition, a, b):
        return self.b.select(condition, a, b)

    def __call__(self, e: sp.Basic):
        if e in self.values:
            return self.values[e]
        value = self._emit(e)
        self.values[e] = value
        return value

    def _emit(self, e: sp.Basic):
        b = self.b
        if isinstance(e, (sp.core.relational.Relational, sp.logic.boolalg.Boolean)):
            return self.condition(e)  # CSE may name a condition: an i1 temporary
        if e.is_Number or isinstance(e, sp.NumberSymbol):
            if not e.is_real:
                raise UnsupportedExpressionError(f"non-real constant {e}")
            return self.const(float(e))
        if isinstance(e, sp.Add):
            args = [self(a) for a in e.args]
            acc = args[0]
            for a in args[1:]:
                acc = b.fadd(acc, a)
            return acc
        if isinstance(e, sp.Mul):
            num, den = [], []
            for a in e.args:
                if isinstance(a, sp.Pow) and a.exp.is_Integer and a.exp < 0:
                    den.append(a.base if a.exp == -1 else sp.Pow(a.base, -a.exp))
                else:
                    num.append(a)
            if len(num) >= 1 and num[0] == -1 and len(num) > 1:  # -x: fneg, as Python's -x*y
                value = b.fneg(self(sp.Mul(*num[1:], evaluate=False)))
            else:
                value = self(num[0]) if num else self.const(1.0)
                for a in num[1:]:
                    value = b.fmul(value, self(a))
            for d in den:
                value = b.fdiv(value, self(d))
            return value
        if isinstance(e, sp.Pow):
            base, exp = e.args
            if exp.is_Integer:
                k = int(exp)
                if k < 0:
                    return b.fdiv(self.const(1.0), self(sp.Pow(base, -k)))
                x = self(base)
                if k == 0:
                    return self.const(1.0)
                if k <= 4:  # as numba: repeated multiplication for small powers
                    acc = x
                    for _ in range(k - 1):
                        acc = b.fmul(acc, x)
                    return acc
                return self.c_call("pow", x, self.const(k))
            return self.real_power(self(base), self(exp))
        if isinstance(e, FPow):
            return self.real_power(self(e.args[0]), self(e.args[1]))
        if isinstance(e, FPowOver):
            return b.call(_helper(self.module, pkpd_power_over), [self(a) for a in e.args])
        if isinstance(e, FPowLog):
            base = self(e.args[1])
            value = b.fmul(self(e.args[0]), self.c_call("log", base))
            return self.select(b.fcmp_ordered("==", base, self.const(0.0)), self.const(0.0), value)
        if isinstance(e, sp.log):
            if len(e.args) != 1:
                raise UnsupportedExpressionError("log with a base")
            return self.c_call("log", self(e.args[0]))
        func = type(e)
        if func in _UNARY_C:
            return self.c_call(_UNARY_C[func], self(e.args[0]))
        if isinstance(e, sp.Abs):
            return self._intrinsic("llvm.fabs", self(e.args[0]))
        if isinstance(e, sp.floor):
            return self._intrinsic("llvm.floor", self(e.args[0]))
        if isinstance(e, sp.ceiling):
            return self._intrinsic("llvm.ceil", self(e.args[0]))
        if isinstance(e, sp.atan2):
            return self.c_call("atan2", self(e.args[0]), self(e.args[1]))
        if isinstance(e, sp.sign):
            x = self(e.args[0])
            pos = self.select(
                b.fcmp_ordered(">", x, self.const(0.0)), self.const(1.0), self.const(0.0)
            )
            return self.select(b.fcmp_ordered("<", x, self.const(0.0)), self.const(-1.0), pos)
        if isinstance(e, sp.Heaviside):
            x = self(e.args[0])
            return self.select(
                b.fcmp_ordered(">", x, self.const(0.0)), self.const(1.0), self.const(0.0)
            )
        if isinstance(e, (sp.Max, sp.Min)):
            op = ">=" if isinstance(e, sp.Max) else "<="
            args = [self(a) for a in e.args]
            acc = args[0]
            for a in args[1:]:  # a if a >= b else b, as the other backends
                acc = self.select(b.fcmp_ordered(op, acc, a), acc, a)
            return acc
        if isinstance(e, sp.Piecewise):
            value = self.const(float("nan"))
            for expr, cond in reversed(e.args):
                value = self.select(self.condition(cond), self(expr), value)
            return value
        raise UnsupportedExpressionError(f"{type(e).__name__}: {e}")

    def condition(self, c):
        b = self.b
        if c in self.values:  # a condition named by CSE
            return self.values[c]
        if c is sp.true or c == True:  # noqa: E712 - sympy's true
            return ir.Constant(ir.IntType(1), 1)
        if c is sp.false or c == False:  # noqa: E712
            return ir.Constant(ir.IntType(1), 0)
        if type(c) in _COMPARE:
            op = _COMPARE[type(c)]
            lhs, rhs = self(c.lhs), self(c.rhs)
            return b.fcmp_unordered(op, lhs, rhs) if op == "!=" else b.fcmp_ordered(op, lhs, rhs)
        if isinstance(c, sp.And):
            acc = self.condition(c.args[0])
            for a in c.args[1:]:
                acc = b.and_(acc, self.condition(a))
            return acc
        if isinstance(c, sp.Or):
            acc = self.condition(c.args[0])
            for a in c.args[1:]:
                acc = b.or_(acc, self.condition(a))
            return acc
        if isinstance(c, sp.Not):
            return b.not_(self.condition(c.args[0]))
        raise UnsupportedExpressionError(f"condition {c}")


def _finite(emit: _Emitter, value):
    """value if finite else 0 (|value| < inf is false for nan and +-inf)."""
    b = emit.b
    magnitude = emit._intrinsic("llvm.fabs", value)
    return b.select(
        b.fcmp_ordered("<", magnitude, emit.const(float("inf"))), value, emit.const(0.0)
    )


def _emit_function(module: ir.Module, block: Block, syms: _Symbols) -> None:
    fn = ir.Function(module, FUNCTION_TYPE_SELECTS if block.selects else FUNCTION_TYPE, block.name)
    fn.attributes.add("nounwind")
    y, t, p, sw, out, out2 = fn.args[:6]
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    i64 = ir.IntType(64)

    def load(ptr, i: int, name: str):
        return builder.load(builder.gep(ptr, [ir.Constant(i64, i)]), name=name)

    values: dict = {time_symbol: t, sp.Symbol("t", real=True): t}
    if "y" in block.inputs:
        values.update({s: load(y, i, s.name) for i, s in enumerate(syms.x)})
    if "p" in block.inputs:
        values.update({s: load(p, i, s.name) for i, s in enumerate(syms.p)})
    if "s" in block.inputs:
        values.update({s: load(sw, i, s.name) for i, s in enumerate(syms.sw)})
    emit = _Emitter(module, builder, values)
    for symbol, expr in block.temporaries:
        values[symbol] = emit(expr)
    buffers = {"out": out, "out2": out2}
    shapes = dict(block.outputs)

    def store(buf: str, idx: tuple[int, ...], value) -> None:
        flat = idx[0] if len(idx) == 1 else idx[0] * shapes[buf][1] + idx[1]
        builder.store(value, builder.gep(buffers[buf], [ir.Constant(i64, flat)]))

    written = {}
    for buf, idx, expr, finite in block.stores:
        value = emit(expr)
        written[(buf, idx)] = _finite(emit, value) if finite else value
    for buf, shape in block.outputs:
        entries = (
            [(i,) for i in range(shape[0])]
            if written_whole(shape)
            else [idx for b, idx in written if b == buf]
        )
        for idx in entries:
            store(buf, idx, written.get((buf, idx), emit.const(0.0)))
    for group in block.columns:  # if sel[k] != 0: column k (its values stay in its block)
        flag = load(fn.args[6], group.k, f"sel_{group.k}")
        column = fn.append_basic_block(f"column_{group.k}")
        after = fn.append_basic_block(f"after_column_{group.k}")
        builder.cbranch(builder.fcmp_unordered("!=", flag, emit.const(0.0)), column, after)
        builder.position_at_end(column)
        local = _Emitter(module, builder, dict(values))
        for symbol, expr in group.temporaries:
            local.values[symbol] = local(expr)
        for buf, idx, expr, finite in group.stores:
            value = local(expr)
            store(buf, idx, _finite(local, value) if finite else value)
        builder.branch(after)
        builder.position_at_end(after)
    builder.ret_void()


def generate_ir(model, header: str) -> str:
    """The LLVM IR text of the model's functions after ``header`` (IR comments, ``;``).
    Raises :class:`UnsupportedExpressionError`."""
    syms, blocks, structure = lower(model)
    module = ir.Module(name=model.name)
    for block in blocks:
        _emit_function(module, block, syms)
    program = sparse_lu.lu_program(len(model.states), structure["J"])
    sparse_lu.emit_ir(module, program, FUNCTION_TYPE)
    return f"{header}\n{PATTERNS_TAG}{json.dumps(structure)}\n{module}"


@functools.lru_cache(maxsize=1)
def _initialise_llvm() -> None:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    libm = ctypes.util.find_library("m")
    if libm:
        llvm.load_library_permanently(libm)


def _target_machine():
    """A new machine for the host (an execution engine takes ownership of its machine)."""
    import llvmlite.binding as llvm

    _initialise_llvm()
    return llvm.Target.from_default_triple().create_target_machine(opt=2, jit=True)


def _object_code(text: str, path) -> bytes:
    """Machine code for the IR ``text``: from ``path`` (``.o`` beside the ``.ll``) when it
    was made from this very text and is intact, else compiled and written there.

    The file holds SHA-256(text and host triple), SHA-256(code), then the code: a file cut
    short, damaged, made from other IR or for another kind of machine is never used.
    """
    import hashlib

    import llvmlite.binding as llvm

    from pkpd_cart.compile import cache

    # the code is for this kind of machine: the triple is part of what must match
    source = hashlib.sha256(text.encode() + llvm.get_process_triple().encode()).digest()
    obj_path = path.with_suffix(".o")
    try:
        data = obj_path.read_bytes()
        code = data[64:]
        if data[:32] == source and data[32:64] == hashlib.sha256(code).digest():
            return code
    except OSError:
        pass
    machine = _target_machine()
    parsed = llvm.parse_assembly(text)
    parsed.verify()
    builder = llvm.create_pass_builder(machine, llvm.PipelineTuningOptions(speed_level=2))
    builder.getModulePassManager().run(parsed, builder)
    code = machine.emit_object(parsed)
    cache.write_atomically(obj_path, source + hashlib.sha256(code).digest() + code)
    return code


def _patterns(text: str) -> dict:
    for line in text.splitlines():
        if line.startswith(PATTERNS_TAG):
            return json.loads(line[len(PATTERNS_TAG) :])
    raise RuntimeError("the IR file has no patterns line")


def load_ir(text: str, model, path) -> SimpleNamespace:
    """Load the model's compiled functions (see :func:`_object_code`) and return a
    module-like namespace: each function with an ``address`` attribute (as numba's
    ``cfunc``), the derivatives' structural non-zeros (``PATTERNS``), and the execution
    engine that owns the code, kept alive. ``model`` is unused (the loaders of the other
    backends share this signature)."""
    import llvmlite.binding as llvm

    code = _object_code(text, path)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _target_machine())
    engine.add_object_file(llvm.ObjectFileRef.from_data(code))
    engine.finalize_object()
    namespace = SimpleNamespace(_engine=engine, PATTERNS=_patterns(text))
    for g in GENERATED:
        address = engine.get_function_address(g.name)
        if not address:
            raise RuntimeError(f"function {g.name} missing from the compiled module")
        setattr(namespace, g.name, SimpleNamespace(address=address, name=g.name))
    return namespace
