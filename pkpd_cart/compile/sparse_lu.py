"""Each model's own LU factorisation and solve of the BDF Newton matrix ``I - c J``, written
out as straight-line code for the structure of its Jacobian.

The states are ordered as in KLU's block triangular form: the strongly connected components
of J's graph, each after the components it depends on, so ``I - c J`` is block lower
triangular. Elimination then takes the diagonal pivots in that order, and the fill it
creates is known in advance: the factorisation and the solve are lists of multiply-adds on
the structural non-zeros, with no loops, index lists or tests of zeros (sle_cart: 44
multiply-adds and 64 stored entries, against a dense 17 x 17 LU). The pivots are not
chosen at run time, so each is checked as KLU checks its preferred diagonal pivot: it must
be finite, non-zero and at least ``PIVOT_TOLERANCE`` times every entry below it in its
column. Otherwise the factorisation reports failure and the integrator uses its dense LU
with partial pivoting for that matrix.

:func:`lu_program` derives the program from the structure; :func:`python_source` and
:func:`emit_ir` write it as Python (the ``python`` and ``numba`` backends) and as LLVM IR
(the ``llvm`` backend). Generated functions, with the common signature
``fn(x, t, p, sw, out, out2)``:

- ``lu``: ``x`` is J (n x n, row-major, model order), ``t`` is c; writes the factors into
  ``out`` (n x n, row-major, block-triangular order; only the structural entries; the
  diagonal holds the pivots' reciprocals, so that the solves multiply: a division on the
  critical path of back substitution costs three times a multiplication) and 1.0
  (accepted) or 0.0 (a pivot failed the check) into ``out2[0]``.
- ``lu_solve``: ``x`` holds the factors, ``t`` the stride s; solves in place for the
  vector ``out[0], out[s], ..., out[(n - 1) s]`` (model order), so that one direction of
  the integrator's component-major sensitivity block is solved where it lies.
- ``lu_solve4``: the same for the ``SOLVE_WIDTH`` adjacent vectors ``out[c], out[s + c],
  ...`` (c < 4), in vector registers: four sensitivity directions at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from graphlib import TopologicalSorter

import numpy as np

#: KLU's default pivot tolerance: a diagonal pivot is kept if it is at least this fraction
#: of the largest entry in its column (below it).
PIVOT_TOLERANCE = 1e-3
#: ``lu_solve4`` solves this many adjacent right-hand sides at once (vector registers).
SOLVE_WIDTH = 4
#: Above this many multiply-adds the program is not written out (a large, dense model);
#: its ``lu`` always reports failure and the dense LU is used.
MAX_OPERATIONS = 20000


@dataclass(frozen=True)
class LuProgram:
    """Elimination with diagonal pivots in block-triangular order.

    ``order[k]``: the state at position k. ``source``: positions (i, j) holding
    ``-c J[order[i], order[j]]`` (plus 1 on the diagonal). ``factors``: every structural
    non-zero of L and U (positions). ``steps``: for each pivot k, the rows below it and the
    columns right of it that elimination touches. ``checked``: the rows below each pivot
    in its own block, the entries its check compares it with.
    """

    n: int
    order: tuple[int, ...]
    source: frozenset[tuple[int, int]]
    factors: tuple[tuple[int, int], ...]
    steps: tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...]
    checked: tuple[tuple[int, ...], ...]  # per pivot, the rows its check compares with

    @property
    def operations(self) -> int:
        return sum(len(rows) * (1 + len(cols)) for _, rows, cols in self.steps)

    @property
    def written_out(self) -> bool:
        return self.operations <= MAX_OPERATIONS

    def triangles(self) -> tuple[list[list[int]], list[list[int]]]:
        """For each row i, the columns of L's entries left of the diagonal and of U's
        right of it, ascending: the multiply-adds of the forward and back substitution."""
        lower: list[list[int]] = [[] for _ in range(self.n)]
        upper: list[list[int]] = [[] for _ in range(self.n)]
        for i, j in self.factors:  # row-major, so each list comes out ascending
            if j < i:
                lower[i].append(j)
            elif j > i:
                upper[i].append(j)
        return lower, upper


def block_triangular_order(n: int, pairs: np.ndarray) -> tuple[list[int], list[int]]:
    """States ordered by strongly connected components of the graph j -> i for each
    structural non-zero J[i, j], each component after those it depends on, and in model
    order inside a component; and the component (block) at each position. The components
    come from a transitive closure (Warshall, vectorised: scipy.sparse.csgraph would add
    0.3 s to every start-up)."""
    if n == 0:  # a model of parameters and expressions only
        return [], []
    reach = np.eye(n, dtype=bool)
    if len(pairs):
        reach[pairs[:, 1], pairs[:, 0]] = True
    for k in range(n):
        reach |= reach[:, k : k + 1] & reach[k : k + 1, :]
    component = (reach & reach.T).argmax(axis=1)  # named by its first state
    sorter = TopologicalSorter({int(c): set() for c in np.unique(component)})
    for i, j in pairs:
        if component[i] != component[j]:
            sorter.add(int(component[i]), int(component[j]))
    order = [int(s) for c in sorter.static_order() for s in np.flatnonzero(component == c)]
    return order, [int(component[s]) for s in order]


def lu_program(n: int, jacobian_pattern) -> LuProgram:
    """The elimination program for a Jacobian with structural non-zeros
    ``jacobian_pattern`` (pairs ``(i, j)``)."""
    pairs = np.asarray(list(jacobian_pattern), dtype=np.int64).reshape(-1, 2)
    order, block = block_triangular_order(n, pairs)
    position = {state: k for k, state in enumerate(order)}
    source = frozenset((position[int(i)], position[int(j)]) for i, j in pairs)
    nonzero = np.eye(n, dtype=bool)
    for i, j in source:
        nonzero[i, j] = True
    steps = []
    for k in range(n):
        rows = tuple(int(i) for i in np.flatnonzero(nonzero[k + 1 :, k]) + k + 1)
        cols = tuple(int(j) for j in np.flatnonzero(nonzero[k, k + 1 :]) + k + 1)
        for i in rows:
            nonzero[i, list(cols)] = True  # fill
        steps.append((k, rows, cols))
    factors = tuple((int(i), int(j)) for i, j in zip(*np.nonzero(nonzero)))
    # Rows of later blocks below a pivot are couplings: U's row k stays inside k's block,
    # so eliminating them never changes a diagonal block (block forward substitution).
    # Only the rows of the pivot's own block can make entries grow.
    same_block = tuple(tuple(i for i in rows if block[i] == block[k]) for k, rows, _ in steps)
    return LuProgram(n, tuple(order), source, factors, tuple(steps), same_block)


def python_source(program: LuProgram) -> str:
    """The text of ``lu``, ``lu_solve`` and ``lu_solve4`` for a generated Python module
    (its ``_model`` decorator and ``_arr`` helper; ``math`` imported)."""
    n = program.n
    lu = ['"""LU of I - c J (c = t), static pivots: factors into out, 1.0/0.0 into out2[0]"""']
    lu += [f"J = _arr(y_, ({n * n},))", f"A = _arr(out_, ({n * n},))", "info = _arr(out2_, (1,))"]
    last = max(n - 1, 0)  # b's last index is last * s (+ the width - 1)
    solve = ['"""solve in place for out[0], out[s], ... (s = t) with the factors in y_"""']
    solve += ["s = int(t)", f"A = _arr(y_, ({n * n},))", f"b = _arr(out_, ({last} * s + 1,))"]
    solve4 = [f'"""the same for {SOLVE_WIDTH} adjacent right-hand sides out[i s + c]"""']
    solve4 += ["s = int(t)", f"A = _arr(y_, ({n * n},))"]
    solve4 += [f"b = _arr(out_, ({last} * s + {SOLVE_WIDTH},))", f"for c in range({SOLVE_WIDTH}):"]
    if not program.written_out:
        lu += ["info[0] = 0.0"]
        solve += ["pass"]
        solve4 += ["    pass"]
    else:
        order = program.order
        for i, j in program.factors:
            if (i, j) in program.source:
                value = f"-t * J[{order[i] * n + order[j]}]"
                lu.append(f"a{i}_{j} = {'1.0 ' if i == j else ''}{value}")
            else:
                lu.append(f"a{i}_{j} = {'1.0' if i == j else '0.0'}")
        lu.append("ok = True")
        for (k, rows, cols), checked in zip(program.steps, program.checked):
            pivot = f"abs(a{k}_{k})"
            lu.append(f"ok = ok and math.isfinite(a{k}_{k}) and a{k}_{k} != 0.0")
            for i in checked:
                lu.append(f"ok = ok and {pivot} >= {PIVOT_TOLERANCE!r} * abs(a{i}_{k})")
            lu.append(f"inv{k} = 1.0 / a{k}_{k}")
            for i in rows:
                lu.append(f"a{i}_{k} = a{i}_{k} * inv{k}")
                lu += [f"a{i}_{j} = a{i}_{j} - a{i}_{k} * a{k}_{j}" for j in cols]
        lu += [
            f"A[{i * n + j}] = {f'inv{i}' if i == j else f'a{i}_{j}'}" for i, j in program.factors
        ]
        lu.append("info[0] = 1.0 if ok else 0.0")
        lower, upper = program.triangles()
        steps = [f"w{i} = b[{order[i]} * s + c]" for i in range(n)]
        for i in range(n):
            steps += [f"w{i} = w{i} - A[{i * n + j}] * w{j}" for j in lower[i]]
        for i in range(n - 1, -1, -1):
            steps += [f"w{i} = w{i} - A[{i * n + j}] * w{j}" for j in upper[i]]
            steps.append(f"w{i} = w{i} * A[{i * n + i}]")
        steps += [f"b[{order[i]} * s + c] = w{i}" for i in range(n)]
        solve += ["c = 0"] + steps
        solve4 += ["    " + line for line in steps] or ["    pass"]  # n = 0: no states
    body = {"lu": lu, "lu_solve": solve, "lu_solve4": solve4}
    return "\n\n".join(
        f"@_model\ndef {name}(y_, t, p_, sw_, out_, out2_):\n"
        + "\n".join("    " + line for line in lines)
        + "\n"
        for name, lines in body.items()
    )


def emit_ir(module, program: LuProgram, function_type) -> None:
    """Add ``lu``, ``lu_solve`` and ``lu_solve4`` to the llvmlite ``module`` (signature
    ``function_type``, the common one of the generated functions)."""
    from llvmlite import ir

    double = ir.DoubleType()
    i64 = ir.IntType(64)
    n = program.n

    def at(builder, pointer, index):
        offset = index if isinstance(index, ir.Value) else ir.Constant(i64, index)
        return builder.gep(pointer, [offset])

    one, zero = ir.Constant(double, 1.0), ir.Constant(double, 0.0)
    fn = ir.Function(module, function_type, "lu")
    fn.attributes.add("nounwind")
    J, c, _, _, A, info = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if not program.written_out:
        b.store(zero, at(b, info, 0))
        b.ret_void()
    else:
        fabs = module.declare_intrinsic("llvm.fabs", [double])
        order = program.order
        a = {}
        for i, j in program.factors:
            if (i, j) in program.source:
                value = b.fmul(b.fneg(c), b.load(at(b, J, order[i] * n + order[j])))
                a[i, j] = b.fadd(one, value) if i == j else value
            else:
                a[i, j] = one if i == j else zero
        ok = ir.Constant(ir.IntType(1), 1)
        reciprocal = {}
        infinity = ir.Constant(double, float("inf"))
        for (k, rows, cols), checked in zip(program.steps, program.checked):
            pivot = b.call(fabs, [a[k, k]])
            # finite and non-zero: 0 < |pivot| < inf (false for nan)
            ok = b.and_(ok, b.fcmp_ordered(">", pivot, zero))
            ok = b.and_(ok, b.fcmp_ordered("<", pivot, infinity))
            for i in checked:
                below = b.fmul(ir.Constant(double, PIVOT_TOLERANCE), b.call(fabs, [a[i, k]]))
                ok = b.and_(ok, b.fcmp_ordered(">=", pivot, below))
            inv = b.fdiv(one, a[k, k])
            reciprocal[k] = inv
            for i in rows:
                a[i, k] = b.fmul(a[i, k], inv)
                for j in cols:
                    a[i, j] = b.fsub(a[i, j], b.fmul(a[i, k], a[k, j]))
        for i, j in program.factors:
            b.store(reciprocal[i] if i == j else a[i, j], at(b, A, i * n + j))
        b.store(b.select(ok, one, zero), at(b, info, 0))
        b.ret_void()

    _emit_solve(module, program, function_type, "lu_solve", 1)
    _emit_solve(module, program, function_type, "lu_solve4", SOLVE_WIDTH)


def _emit_solve(module, program: LuProgram, function_type, name: str, width: int) -> None:
    """``name``: the solve for ``width`` adjacent right-hand sides (vector registers of
    ``width`` doubles when width > 1): entries ``out[i s + c]``, c < width."""
    from llvmlite import ir

    double = ir.DoubleType()
    i64 = ir.IntType(64)
    n = program.n
    lane = ir.VectorType(double, width) if width > 1 else double
    fn = ir.Function(module, function_type, name)
    fn.attributes.add("nounwind")
    A, t, _, _, vec, _ = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    if program.written_out:
        stride = b.fptosi(t, i64)
        order = program.order

        def slot(state):
            pointer = b.gep(vec, [b.mul(stride, ir.Constant(i64, state))])
            return b.bitcast(pointer, lane.as_pointer()) if width > 1 else pointer

        def factor(i, j):
            value = b.load(b.gep(A, [ir.Constant(i64, i * n + j)]))
            if width == 1:
                return value
            one_lane = b.insert_element(ir.Constant(lane, None), value, ir.Constant(i64, 0))
            mask = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)
            return b.shuffle_vector(one_lane, ir.Constant(lane, None), mask)

        w = [b.load(slot(order[i]), align=8) for i in range(n)]
        lower, upper = program.triangles()
        for i in range(n):
            for j in lower[i]:
                w[i] = b.fsub(w[i], b.fmul(factor(i, j), w[j]))
        for i in range(n - 1, -1, -1):
            for j in upper[i]:
                w[i] = b.fsub(w[i], b.fmul(factor(i, j), w[j]))
            w[i] = b.fmul(w[i], factor(i, i))
        for i in range(n):
            b.store(w[i], slot(order[i]), align=8)
    b.ret_void()
