"""Run the SBML Test Suite's semantic cases through pkpd_cart's SBML import and simulation.

Each case is imported with :func:`pkpd_cart.read_sbml`, simulated on the case's output grid
and compared with the expected results under the case's own tolerances
(``|expected - actual| <= absolute + relative * |expected|``). Outcomes:

* ``pass``: every compared value within tolerance;
* ``wrong``: simulated, but some value is off (a silent wrong answer: the target is 0);
* ``refused``: the import (or simulation) refused the model in one line with the
  package's own exception (ModelDefinitionError, InputError, SimulationError);
* ``crash``: anything else (another exception, or over the time limit);
* ``not a time course``: flux-balance cases, outside what an ODE tool does.

Usage::

    python benchmarks/sbml_conformance.py [--cases DIR] [--jobs 2] [--only 1,2,3]
        [--out docs/sbml-conformance.md]

Prints the totals and writes a Markdown table (per outcome, per component and test tag).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np

DEFAULT_CASES = Path(__file__).resolve().parents[1] / ".." / "shared" / "sbml-test-suite" / "cases"
OUTCOMES = ("pass", "wrong", "refused", "crash", "not a time course")


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


def run_case(case_dir: Path, time_limit: int = 60) -> tuple[str, str, list[str], str]:
    """(case, outcome, tags, detail)."""
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
        return case, "refused", tags, str(exc).splitlines()[0]
    except Exception as exc:  # noqa: BLE001 - a crash is what this script counts
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return case, "crash", tags, f"{type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"[:300]
    finally:
        signal.alarm(0)


def _worker(case_dir: str):
    return run_case(Path(case_dir))


def table(results: list[tuple[str, str, list[str], str]]) -> str:
    counts = collections.Counter(r[1] for r in results)
    lines = [
        "# SBML Test Suite conformance",
        "",
        f"{len(results)} semantic cases (SBML L3V2) of the SBML Test Suite, run by "
        "`benchmarks/sbml_conformance.py`.",
        "",
        "| outcome | cases |",
        "|---|---:|",
        *(f"| {o} | {counts.get(o, 0)} |" for o in OUTCOMES),
        "",
        "## By tag",
        "",
        "| tag | " + " | ".join(OUTCOMES) + " |",
        "|---|" + "---:|" * len(OUTCOMES),
    ]
    by_tag: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for _, outcome, tags, _ in results:
        for tag in tags:
            by_tag[tag][outcome] += 1
    for tag in sorted(by_tag):
        lines.append(f"| {tag} | " + " | ".join(str(by_tag[tag].get(o, 0)) for o in OUTCOMES) + " |")
    lines += ["", "## Cases not passing", "", "| case | outcome | detail |", "|---|---|---|"]
    for case, outcome, _, detail in sorted(results):
        if outcome in ("wrong", "crash", "refused"):
            lines.append(f"| {case} | {outcome} | {detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated case numbers")
    parser.add_argument("--out", type=Path, default=None, help="Markdown table to write")
    args = parser.parse_args(argv)
    if not args.cases.is_dir():
        print(f"no cases folder {args.cases}", file=sys.stderr)
        return 2
    dirs = sorted(
        d for d in args.cases.iterdir() if d.is_dir() and (d / f"{d.name}-sbml-l3v2.xml").is_file()
    )
    if args.only:
        wanted = {f"{int(c):05d}" for c in args.only.split(",")}
        dirs = [d for d in dirs if d.name in wanted]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.jobs, maxtasksperchild=50) as pool:
        results = list(pool.imap_unordered(_worker, [str(d) for d in dirs], chunksize=4))
    counts = collections.Counter(r[1] for r in results)
    print(
        f"{len(results)} cases in {time.perf_counter() - started:.0f} s: "
        + ", ".join(f"{o} {counts.get(o, 0)}" for o in OUTCOMES)
    )
    if args.only:
        for case, outcome, _, detail in sorted(results):
            print(f"{case} {outcome} {detail}")
    if args.out:
        args.out.write_text(table(results))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
