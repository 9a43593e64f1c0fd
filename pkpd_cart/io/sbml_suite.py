"""Cases of the SBML Test Suite (semantic, time course): read one, run it, compare.

A case folder ``NNNNN/`` holds ``NNNNN-sbml-l3v2.xml``, ``NNNNN-settings.txt`` (output
grid, compared variables, tolerances, which are amounts), ``NNNNN-results.csv`` and
``NNNNN-model.m`` (tags). A case passes when every compared value satisfies
``|expected - actual| <= absolute + relative * |expected|``. Used by
``benchmarks/sbml_conformance.py`` (all cases) and ``tests/test_sbml_suite.py`` (the
vendored ones).
"""

from __future__ import annotations

import signal
import traceback
from pathlib import Path

import numpy as np


def read_settings(case_dir: Path) -> dict:
    case = case_dir.name
    settings = {}
    for line in (case_dir / f"{case}-settings.txt").read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            settings[key.strip()] = value.strip()
    names = lambda key: [v.strip() for v in settings.get(key, "").split(",") if v.strip()]  # noqa: E731
    return {
        "start": float(settings["start"]),
        "duration": float(settings["duration"]),
        "steps": int(float(settings["steps"])),
        "variables": names("variables"),
        "absolute": float(settings["absolute"]),
        "relative": float(settings["relative"]),
        "amount": set(names("amount")),
        "concentration": set(names("concentration")),
    }


def read_tags(case_dir: Path) -> tuple[list[str], str]:
    tags, test_type = [], ""
    for line in (case_dir / f"{case_dir.name}-model.m").read_text().splitlines():
        if line.startswith(("componentTags:", "testTags:")):
            tags += [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
        elif line.startswith("testType:"):
            test_type = line.split(":", 1)[1].strip()
    return tags, test_type


def run_case(case_dir: Path, time_limit: int = 900) -> tuple[str, str, list[str], str]:
    """``(case, outcome, tags, detail)``; outcome is ``pass``, ``wrong``, ``refused`` (the
    package's own one-line error), ``crash`` (anything else, or over ``time_limit`` s) or
    ``not a time course``."""
    import pandas as pd

    import pkpd_cart as pk
    from pkpd_cart.errors import InputError, ModelDefinitionError, SimulationError

    case = case_dir.name
    tags, test_type = read_tags(case_dir)
    if test_type != "TimeCourse":
        return case, "not a time course", tags, test_type

    def alarm(signum, frame):
        raise TimeoutError(f"over {time_limit} s")

    signal.signal(signal.SIGALRM, alarm)
    signal.alarm(time_limit)
    try:
        s = read_settings(case_dir)
        sbml = pk.read_sbml(case_dir / f"{case}-sbml-l3v2.xml")
        times = np.linspace(s["start"], s["start"] + s["duration"], s["steps"] + 1)
        options = pk.SolverOptions(method="LSODA", rtol=1e-10, atol=1e-14, max_steps=500_000)
        # the Python back end: these models are tiny, and numba's compile time would dominate
        frame = sbml.simulate(
            times, ids=s["variables"], amounts=s["amount"], options=options, backend="python"
        )
        # by position: the time column may share a name with a variable (case 1821)
        table = pd.read_csv(case_dir / f"{case}-results.csv", header=None, skiprows=1)
        header = (case_dir / f"{case}-results.csv").read_text().splitlines()[0].split(",")
        expected = {name.strip(): table[i] for i, name in enumerate(header) if i > 0}
        worst, where = 0.0, ""
        for v in s["variables"]:
            want = expected[v].to_numpy(dtype=float)
            got = frame[v].to_numpy(dtype=float)
            allowed = s["absolute"] + s["relative"] * np.abs(want)
            both_nan = np.isnan(want) & np.isnan(got)
            same_inf = np.isinf(want) & (want == got)
            bad = ~(both_nan | same_inf) & ~(np.abs(want - got) <= allowed)
            if bad.any():
                i = int(np.argmax(bad))
                ratio = float(np.nan_to_num(np.abs(want[i] - got[i]) / allowed[i], nan=np.inf))
                if ratio > worst or not where:
                    worst = ratio
                    where = f"{v} at t={times[i]:g}: {got[i]:.6g} vs {want[i]:.6g}"
        if where:
            return case, "wrong", tags, where
        return case, "pass", tags, ""
    except (ModelDefinitionError, InputError, SimulationError) as exc:
        where = str(case_dir / f"{case}-sbml-l3v2.xml")
        return case, "refused", tags, str(exc).splitlines()[0].replace(where, f"{case}.xml")
    except Exception as exc:  # noqa: BLE001 - a crash is what this script counts
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return (
            case,
            "crash",
            tags,
            f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"[:300],
        )
    finally:
        signal.alarm(0)
