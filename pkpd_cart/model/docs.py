"""Model documentation pages generated from the symbolic definitions (Markdown + LaTeX)."""

from __future__ import annotations

import math

import sympy as sp

from pkpd_cart.model.modelling import Model


def _latex(expr: sp.Expr) -> str:
    return sp.latex(expr, mul_symbol="dot")


def _with_switches(model: Model, rhs: sp.Expr) -> str:
    """LaTeX of ``rhs``; with one switch in it, as cases before and after the switch time."""
    used = [s for s in model.switches.values() if s.symbol in rhs.free_symbols]
    if len(used) != 1:
        return _latex(rhs)
    sw = used[0]
    before, after = sp.simplify(rhs.subs(sw.symbol, 0)), sp.simplify(rhs.subs(sw.symbol, 1))
    return (
        f"\\begin{{cases}} {_latex(before)} & t < {_latex(sw.at)} \\\\ "
        f"{_latex(after)} & t \\ge {_latex(sw.at)} \\end{{cases}}"
    )


def _num(value: float) -> str:
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def model_page(model: Model, diagram: str | None = None, appendix: str = "") -> str:
    """The Markdown page of ``model``: equations, parameter table with sources, states.

    ``diagram`` is the relative path of a compartment diagram image to show (see
    :func:`pkpd_cart.model.diagram.draw_diagram`); ``appendix`` is Markdown added at the end.
    """
    lines = [f"# Model `{model.name}`", ""]
    if model.description:
        lines += [model.description, ""]
    if model.reference:
        lines += [f"**Reference:** {model.reference}", ""]
    lines += [
        f"Time unit: {model.time_unit}. This page is generated from the symbolic model "
        "by `python docs/generate.py`; do not edit it by hand.",
        "",
    ]

    if diagram:
        lines += ["## Compartments and flows", "", f"![{model.name} diagram]({diagram})", ""]
    lines += ["## Equations", ""]
    for name, terms in model.terms.items():
        rhs = sp.Add(*(term.expr for term in terms))
        lhs = f"\\frac{{d\\,{sp.latex(sp.Symbol(name))}}}{{dt}}"
        lines += ["$$", f"{lhs} = {_with_switches(model, rhs)}", "$$", ""]
    if model.expressions:
        lines += ["Named expressions:", ""]
        for e in model.expressions.values():
            lines += [
                "$$",
                f"{sp.latex(e.symbol)} = {_latex(e.expr)}",
                "$$",
                f"({e.description}; {e.unit})" if e.description else f"({e.unit})",
                "",
            ]
    if model.switches:
        lines += ["Switches (0 before, 1 from the switch time on; integration restarts there):", ""]
        for s in model.switches.values():
            lines += [
                f"- `{s.name}` at $t = {_latex(s.at)}$"
                + (f": {s.description}" if s.description else ""),
                "",
            ]
    if model.events:
        lines += ["Events (the states jump when the trigger becomes true):", ""]
        for ev in model.events:
            sets = ", ".join(f"${_latex(sp.Symbol(k))} := {_latex(v)}$" for k, v in ev.assignments)
            extra = f", delay ${_latex(ev.delay)}$" if ev.delay is not None else ""
            lines += [f"- `{ev.name}`: when ${_latex(ev.trigger)}$: {sets}{extra}", ""]

    lines += [
        "## Observables",
        "",
        "| name | expression | unit | description |",
        "|---|---|---|---|",
    ]
    for o in model.observables.values():
        lines.append(f"| `{o.name}` | ${_latex(o.expr)}$ | {o.unit} | {_cell(o.description)} |")
    lines.append("")

    lines += [
        "## States",
        "",
        "| state | unit | initial value | dose target | description |",
        "|---|---|---|---|---|",
    ]
    for s in model.states.values():
        lines.append(
            f"| `{s.name}` | {s.unit} | ${_latex(s.initial)}$ | "
            f"{'yes' if s.dose_target else ''} | {_cell(s.description)} |"
        )
    lines.append("")

    lines += [
        "## Parameters",
        "",
        "| parameter | value | unit | bounds | scale | description | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in model.parameters.values():
        lines.append(
            f"| `{p.name}` | {_num(p.value)} | {p.unit} | "
            f"[{_num(p.lower)}, {_num(p.upper)}] | {p.scale} | "
            f"{_cell(p.description)} | {_cell(p.source)} |"
        )
    lines.append("")

    sets = [name for name in model.parameter_sets.index if name != "default"]
    if sets:
        lines += [
            "## Parameter sets",
            "",
            f"{len(sets)} named sets besides `default`: " + ", ".join(f"`{s}`" for s in sets) + ".",
            "",
        ]
    if model.notes:
        lines += ["## Assumptions and notes", ""] + [f"- {n}" for n in model.notes] + [""]
    if appendix:
        lines += [appendix.rstrip("\n"), ""]
    return "\n".join(lines)
