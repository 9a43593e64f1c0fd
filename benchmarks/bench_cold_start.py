"""From a new or edited model to its first simulation, in a new process, beside
libroadrunner loading the same model's SBML in a new process (measured in the same run).

For each model, a fresh Python process runs: import the third-party packages pkpd_cart
builds on (numpy, scipy.linalg, sympy, numba, and numba's set-up of its CPU target, which
it does on first use and which imports scipy.linalg for its BLAS check; and
``sympy.tensor.tensor``, which sympy imports with ``sympy.combinatorics`` at the first sum
any sympy user builds, 0.05-0.1 s), import pkpd_cart,
load the model, compile it (generate + compile its functions), first simulation, first
simulation with forward sensitivities (all parameters). "Own part" is the time from the
import of pkpd_cart to the first simulation: what pkpd_cart itself costs, the floor of
the third-party imports aside. Three situations:

* new model: an empty model cache (``PKPD_CART_CACHE_DIR``), as after any edit of a model;
  the integrator kernels are compiled once per machine and come from numba's cache;
* cached model: the same again, the model's compiled functions now on disk;
* first use on this machine (sle_cart only): the kernels' numba cache empty as well.

The ``numba`` backend (the model's functions compiled by numba as ``cfunc`` s) is timed
beside the default ``llvm`` backend for the new-model case. Each situation is the best of
``--repeat`` runs. Ratios are pkpd_cart / libroadrunner (new process, import + load +
first simulation).

Run: ``python benchmarks/bench_cold_start.py [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pkpd_cart as pk

MODELS = ("stein2019", "kirouac2023", "sle_cart")

PKPD = """
import json, sys, time
t00 = time.perf_counter()
import numpy, scipy.linalg, sympy, numba
import sympy.tensor.tensor  # sympy imports it (and combinatorics) at the first sum built
try:  # numba sets up its CPU target (typing and lowering registries) on first use
    from numba.core.registry import cpu_target
    cpu_target.target_context.refresh()
    cpu_target.typing_context.refresh()
except Exception:
    pass
t0 = time.perf_counter()
import pkpd_cart as pk
t1 = time.perf_counter()
model = pk.load_model(sys.argv[1])
t2 = time.perf_counter()
model.compile(sys.argv[2])
t3 = time.perf_counter()
pk.simulate(model, [0.0, 1.0, 30.0], backend=sys.argv[2])
t4 = time.perf_counter()
pk.simulate(model, [0.0, 1.0, 30.0], backend=sys.argv[2], sensitivities=True)
t5 = time.perf_counter()
print(json.dumps({"third_party": t0 - t00, "import": t1 - t0, "load": t2 - t1,
                  "compile": t3 - t2, "simulate": t4 - t3, "sensitivities": t5 - t4,
                  "ready": t4 - t00, "own": t4 - t0}))
"""

ROADRUNNER = """
import json, sys, time
t0 = time.perf_counter()
import roadrunner
t1 = time.perf_counter()
rr = roadrunner.RoadRunner(open(sys.argv[1]).read())
t2 = time.perf_counter()
rr.simulate(0, 30, 3)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "simulate": t3 - t2, "ready": t3 - t0}))
"""


def run(code: str, args: list[str], env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["ready"])


def pkpd_line(label: str, r: dict, rr: dict) -> str:
    return (
        f"  {label:<24} third-party {r['third_party']:.2f} | import {r['import']:.2f} | load "
        f"{r['load']:.2f} | compile {r['compile']:.2f} | first simulation {r['simulate']:.2f} | "
        f"ready {r['ready']:.2f} s = {r['ready'] / rr['ready']:.1f}x roadrunner | pkpd_cart's "
        f"own part {r['own']:.2f} s | first sensitivities +{r['sensitivities']:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import numba
    import roadrunner

    print(
        f"pkpd_cart {pk.__version__}, numba {numba.__version__}, libroadrunner "
        f"{roadrunner.__version__}, {os.cpu_count()} cores; best of {args.repeat}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in MODELS:
            model = pk.load_model(name)
            sbml = tmp / f"{name}.xml"
            sbml.write_text(model.to_sbml())
            rr = best([run(ROADRUNNER, [str(sbml)], dict(os.environ)) for _ in range(args.repeat)])
            print(
                f"{name} ({len(model.states)} states, {len(model.parameters)} parameters) | "
                f"libroadrunner: import {rr['import']:.2f} | load {rr['load']:.2f} | first "
                f"simulation {rr['simulate']:.3f} | ready {rr['ready']:.2f} s"
            )
            for backend in ("llvm", "numba"):
                runs = []
                for k in range(args.repeat):
                    cache = tmp / f"{name}-{backend}-new-{k}"
                    env = dict(os.environ, PKPD_CART_CACHE_DIR=str(cache))
                    runs.append(run(PKPD, [name, backend], env))
                print(pkpd_line(f"new model ({backend})", best(runs), rr))
            cache = tmp / f"{name}-cached"
            env = dict(os.environ, PKPD_CART_CACHE_DIR=str(cache))
            run(PKPD, [name, "llvm"], env)
            cached = best([run(PKPD, [name, "llvm"], env) for _ in range(args.repeat)])
            print(pkpd_line("cached model (llvm)", cached, rr))
        env = dict(
            os.environ,
            PKPD_CART_CACHE_DIR=str(tmp / "first-use"),
            NUMBA_CACHE_DIR=str(tmp / "numba-first-use"),
        )
        first = run(PKPD, ["sle_cart", "llvm"], env)
        rr = best([run(ROADRUNNER, [str(tmp / "sle_cart.xml")], dict(os.environ))])
        print("sle_cart, first use on this machine (kernels compiled by numba once):")
        print(pkpd_line("first use (llvm)", first, rr))


if __name__ == "__main__":
    main()
