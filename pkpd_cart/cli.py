"""The ``pkpd-cart`` command line.

    pkpd-cart list                         shipped models
    pkpd-cart simulate MODEL [options]     simulate and write a CSV (and a plot)
    pkpd-cart docs MODEL                   print the model's documentation page

Exit codes: 0 success, 1 an error from the package (one line on stderr), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pkpd_cart.errors import PkpdCartError


def _dose(text: str):
    from pkpd_cart.simulate import Dose

    try:
        time, amount, target = text.split(":")
        return Dose(float(time), float(amount), target)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"dose {text!r} is not TIME:AMOUNT:TARGET (e.g. 0:7e7:CAR_infused)"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pkpd-cart", description="CAR-T PK/PD models: list, simulate, document."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the shipped models with their states and observables")

    sim = sub.add_parser("simulate", help="simulate a model and write a CSV (and a PNG)")
    sim.add_argument("model", help="shipped model name or path to a model .py file")
    sim.add_argument(
        "--end",
        type=float,
        default=365.0,
        help="last output time in the model's time unit (default 365)",
    )
    sim.add_argument("--step", type=float, default=1.0, help="output step (default 1)")
    sim.add_argument(
        "--set",
        dest="parameter_set",
        default=None,
        help="named parameter set (see `pkpd-cart list`; default: defaults)",
    )
    sim.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override one parameter; repeatable",
    )
    sim.add_argument(
        "--dose",
        action="append",
        default=[],
        type=_dose,
        metavar="TIME:AMOUNT:TARGET",
        help="bolus dose; repeatable",
    )
    sim.add_argument("--rtol", type=float, default=1e-8, help="relative tolerance")
    sim.add_argument("--atol", type=float, default=1e-8, help="absolute tolerance")
    sim.add_argument("--out", type=Path, required=True, help="CSV file to write")
    sim.add_argument("--plot", type=Path, default=None, help="also write this PNG")

    docs = sub.add_parser("docs", help="print a model's generated documentation (Markdown)")
    docs.add_argument("model", help="shipped model name or path to a model .py file")
    return parser


def _run(args: argparse.Namespace) -> None:
    import pkpd_cart as pk

    if args.command == "list":
        for name in pk.available_models():
            model = pk.load_model(name)
            sets = len(model.parameter_sets) - 1
            print(
                f"{name}: {model.description}\n  states: {', '.join(model.states)}\n"
                f"  observables: {', '.join(model.observables)}\n"
                f"  dose targets: {', '.join(model.dose_targets) or '-'}; "
                f"parameter sets besides default: {sets}"
            )
    elif args.command == "docs":
        from pkpd_cart.docs import model_page

        print(model_page(pk.load_model(args.model)))
    elif args.command == "simulate":
        model = pk.load_model(args.model)
        params: dict[str, float] = {}
        if args.parameter_set:
            params = model.resolve_parameters(args.parameter_set)
            params = dict(zip(model.parameters, params))
        for item in args.param:
            name, _, value = item.partition("=")
            try:
                params[name] = float(value)
            except ValueError:
                raise pk.InputError(f"--param {item!r} is not NAME=VALUE") from None
        times = np.arange(0.0, args.end + 0.5 * args.step, args.step)
        frame = model.simulate(
            times,
            params=params or None,
            doses=args.dose,
            options=pk.SolverOptions(rtol=args.rtol, atol=args.atol),
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
        if args.plot:
            from pkpd_cart.plotting import plot_simulation

            plot_simulation(model, frame, path=args.plot)
            print(f"wrote {args.plot}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except PkpdCartError as exc:
        print(f"pkpd-cart: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
