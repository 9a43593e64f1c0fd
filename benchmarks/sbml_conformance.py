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
import sys
import time
from pathlib import Path

from pkpd_cart.io.sbml_suite import run_case

DEFAULT_CASES = Path(__file__).resolve().parents[1] / ".." / "shared" / "sbml-test-suite" / "cases"
OUTCOMES = ("pass", "wrong", "refused", "crash", "not a time course")


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
        lines.append(
            f"| {tag} | " + " | ".join(str(by_tag[tag].get(o, 0)) for o in OUTCOMES) + " |"
        )
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
