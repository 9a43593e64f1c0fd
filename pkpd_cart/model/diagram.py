"""Compartment-and-flow diagrams drawn from a model's symbolic definition.

Solid arrows are mass flows declared with ``ModelBuilder.flow``; dashed arrows are
influences: a state or signal that appears in another's equation. Signals (grey, bottom
row) are named expressions of states, such as the CAR-T kill rate. States joined by
flows, or singletons joined by influences, share a row; within a row, states are ordered
by their topological generation.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from pkpd_cart.model.modelling import Model  # noqa: E402


def flow_graph(model: Model) -> tuple[nx.DiGraph, nx.DiGraph]:
    """``(flows, influences)`` as directed graphs.

    ``flows`` joins states (edge attribute ``label``). ``influences`` joins states and the
    named expressions that depend on states ("signals", e.g. the kill rate): an edge
    ``a -> b`` means ``a`` appears, unexpanded, in the definition or equation of ``b``.
    """
    flows, influences = nx.DiGraph(), nx.DiGraph()
    flows.add_nodes_from(model.states)
    influences.add_nodes_from(model.states)
    states = {s.symbol: name for name, s in model.states.items()}
    signals = {}
    for e in model.expressions.values():
        if model.expand(e.expr).free_symbols & set(states):
            signals[e.symbol] = e.name
    influences.add_nodes_from(signals.values(), signal=True)
    known = {**states, **signals}
    for e in model.expressions.values():
        if e.symbol in signals:
            for sym in e.expr.free_symbols:
                if sym in known and known[sym] != e.name:
                    influences.add_edge(known[sym], e.name)
    for target, terms in model.terms.items():
        for term in terms:
            if term.flow_to is not None:
                flows.add_edge(target, term.flow_to, label=term.label)
    for target, terms in model.terms.items():
        for term in terms:
            for sym in term.expr.free_symbols:
                source = known.get(sym)
                if (
                    source
                    and source != target
                    and not flows.has_edge(source, target)
                    and not (flows.has_edge(target, source))
                ):
                    influences.add_edge(source, target)
    return flows, influences


def _rows(model: Model, flows: nx.DiGraph, influences: nx.DiGraph) -> list[list[str | None]]:
    grouping = nx.Graph()
    grouping.add_nodes_from(model.states)
    grouping.add_edges_from(flows.edges)
    singletons = {n for n in flows if flows.degree(n) == 0}
    grouping.add_edges_from(
        (a, b) for a, b in influences.edges if a in singletons and b in singletons
    )
    order = {name: i for i, name in enumerate(model.states)}
    rows = []
    for component in sorted(
        nx.connected_components(grouping), key=lambda c: min(order[n] for n in c)
    ):
        sub = nx.DiGraph()
        sub.add_nodes_from(component)
        sub.add_edges_from(e for e in flows.edges if e[0] in component and e[1] in component)
        sub.add_edges_from(
            e
            for e in influences.edges
            if e[0] in component and e[1] in component and e[0] in singletons and e[1] in singletons
        )
        dag = nx.condensation(sub)
        generation = {}
        for level, nodes in enumerate(nx.topological_generations(dag)):
            for node in nodes:
                for member in dag.nodes[node]["members"]:
                    generation[member] = level
        columns: dict[int, list[str]] = {}
        for name in sorted(component, key=order.get):
            columns.setdefault(generation[name], []).append(name)
        # one row per component; states sharing a generation spill into rows below
        depth = max(len(names) for names in columns.values())
        for level in range(depth):
            rows.append(
                [
                    names[level] if level < len(names) else None
                    for _, names in sorted(columns.items())
                ]
            )
    return rows


def draw_diagram(model: Model, path: str | Path | None = None, title: str | None = None):
    """Draw the compartments (boxes), flows (solid) and influences (dashed); returns the figure."""
    flows, influences = flow_graph(model)
    state_influences = influences.subgraph(model.states)
    rows = _rows(model, flows, state_influences)
    signals = [n for n in influences if n not in model.states]
    if signals:
        rows.append(signals)
    pos = {}
    for r, row in enumerate(rows):
        for c, name in enumerate(row):
            if name is not None:
                pos[name] = (c * 2.2, -r * 1.2)
    width = max(len(row) for row in rows) * 2.2 + 0.5
    fig, ax = plt.subplots(figsize=(max(6.0, width * 1.2), 1.1 * len(rows) + 1.2))
    for a, b in influences.edges:
        ax.add_patch(
            FancyArrowPatch(
                pos[a],
                pos[b],
                arrowstyle="-|>",
                mutation_scale=10,
                color="0.6",
                linestyle="--",
                lw=0.8,
                connectionstyle="arc3,rad=0.25",
                shrinkA=22,
                shrinkB=22,
            )
        )
    for a, b, data in flows.edges(data=True):
        ax.add_patch(
            FancyArrowPatch(
                pos[a],
                pos[b],
                arrowstyle="-|>",
                mutation_scale=14,
                color="C0",
                lw=1.6,
                shrinkA=28,
                shrinkB=28,
            )
        )
        (xa, ya), (xb, yb) = pos[a], pos[b]
        ax.text(
            (xa + xb) / 2,
            (ya + yb) / 2 + 0.15,
            data.get("label", ""),
            ha="center",
            va="bottom",
            fontsize=7,
            color="C0",
        )
    for name, (x, y) in pos.items():
        state = model.states.get(name)
        if state is None:  # a signal: a named expression of states
            ax.text(
                x,
                y,
                name,
                ha="center",
                va="center",
                fontsize=8,
                style="italic",
                color="0.3",
                bbox={"boxstyle": "round4,pad=0.3", "fc": "0.93", "ec": "0.6"},
            )
            continue
        ax.text(
            x,
            y,
            name,
            ha="center",
            va="center",
            fontsize=9,
            bbox={
                "boxstyle": "round,pad=0.4",
                "fc": "#fff4d6" if state.dose_target else "white",
                "ec": "0.2",
            },
        )
    xs = [p[0] for p in pos.values()]
    ys = [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
    ax.axis("off")
    ax.set_title(
        title
        or f"{model.name}: flows (solid), influences (dashed), signals (grey), dose target shaded",
        fontsize=10,
    )
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
