"""Units a dataset may use, and their conversion to a model observable's unit.

Each row of :data:`CONVERSIONS` reads: a value in ``unit`` times ``factor`` is a value in
``model_unit``. Spellings are compared after :func:`normalise` (case, spaces, micro sign).
"% of CD3+" for CAR-T cells is special: it needs the CD3+ T-cell count measured at the
same visit (see :mod:`pkpd_cart.data.dataset`).
"""

from __future__ import annotations

CONVERSIONS: dict[str, dict[str, float]] = {
    # model unit: {dataset unit: factor to the model unit}
    "cells/uL": {
        "cells/uL": 1.0,
        "/uL": 1.0,
        "cells/mm3": 1.0,
        "cells/mL": 1e-3,
        "cells/L": 1e-6,
        "10^9/L": 1e3,
        "G/L": 1e3,
        "10^6/L": 1e-3,
    },
    "%": {"%": 1.0, "fraction": 100.0},
    "IU/mL": {"IU/mL": 1.0, "kIU/L": 1.0, "IU/L": 1e-3, "U/mL": 1.0},
    "score": {"score": 1.0, "points": 1.0},
    "1": {"1": 1.0, "ratio": 1.0, "fold": 1.0, "% of baseline": 1e-2},
    "copies/ug": {"copies/ug": 1.0, "copies/ug DNA": 1.0},
    "cells": {"cells": 1.0},
}

#: CAR-T as a percentage of CD3+ T cells, convertible to cells/uL given the CD3+ count.
PERCENT_OF_CD3 = "% of CD3+"


def normalise(unit: str) -> str:
    """Canonical spelling: no spaces, lower case, 'u' for the micro sign."""
    return unit.replace("µ", "u").replace("μ", "u").replace(" ", "").lower()


def conversion_factor(unit: str, model_unit: str) -> float | None:
    """Factor from ``unit`` to ``model_unit``, or ``None`` if not convertible."""
    table = CONVERSIONS.get(model_unit)
    if table is None:
        return 1.0 if normalise(unit) == normalise(model_unit) else None
    wanted = normalise(unit)
    for name, factor in table.items():
        if normalise(name) == wanted:
            return factor
    return None


def accepted_units(model_unit: str) -> list[str]:
    """Units accepted for an observable in ``model_unit``."""
    return list(CONVERSIONS.get(model_unit, {model_unit: 1.0}))


def conversion_table_markdown() -> str:
    """The conversion table for the documentation."""
    lines = ["| model unit | dataset unit | multiply by |", "|---|---|---|"]
    for model_unit, table in CONVERSIONS.items():
        for unit, factor in table.items():
            lines.append(f"| {model_unit} | {unit} | {factor:g} |")
    lines.append(f"| cells/uL (CAR-T) | {PERCENT_OF_CD3} | CD3+ count (cells/uL) / 100 |")
    return "\n".join(lines)
