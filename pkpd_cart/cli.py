"""The ``pkpd-cart`` command line.

    pkpd-cart list                         shipped models
    pkpd-cart simulate MODEL [options]     simulate and write a CSV (and a plot)
    pkpd-cart docs MODEL                   print the model's documentation page
    pkpd-cart fit MODEL DATA [options]     fit by maximum likelihood, write a report

Exit codes: 0 success, 1 an error from the package (one line on stderr), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from pkpd_cart.errors import PkpdCartError


def _number(kind: str):
    """An argparse type: a finite number that is positive (``kind="positive"``) or not
    negative (``"non-negative"``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok = value > 0 if kind == "positive" else value >= 0
        if not (np.isfinite(value) and ok):
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind} number")
        return value

    return parse


def _names(text: str) -> list[str]:
    """Comma-separated names, spaces around them dropped."""
    return [v.strip() for v in text.split(",") if v.strip()]


def _dose(text: str):
    from pkpd_cart.errors import InputError
    from pkpd_cart.simulation.solver import Dose

    try:
        time, amount, target, *duration = text.split(":")
        if len(duration) > 1:
            raise ValueError(text)
        return Dose(
            float(time),
            float(amount),
            target,
            duration=float(duration[0] or 0) if duration else 0.0,
        )
    except InputError as exc:  # a well-formed dose outside its domain: say which
        raise argparse.ArgumentTypeError(f"dose {text!r}: {exc}") from None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"dose {text!r} is not TIME:AMOUNT:TARGET[:DURATION] (e.g. 0:7e7:CAR_infused)"
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
        type=_number("non-negative"),
        default=365.0,
        help="last output time in the model's time unit (default 365)",
    )
    sim.add_argument(
        "--step", type=_number("positive"), default=1.0, help="output step (default 1)"
    )
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
        metavar="TIME:AMOUNT:TARGET[:DURATION]",
        help="dose: a bolus, or an infusion over DURATION (time units); repeatable",
    )
    sim.add_argument("--rtol", type=_number("positive"), default=1e-8, help="relative tolerance")
    sim.add_argument("--atol", type=_number("positive"), default=1e-8, help="absolute tolerance")
    sim.add_argument("--out", type=Path, required=True, help="CSV file to write")
    sim.add_argument("--plot", type=Path, default=None, help="also write this PNG")

    docs = sub.add_parser("docs", help="print a model's generated documentation (Markdown)")
    docs.add_argument("model", help="shipped model name or path to a model .py file")

    fit = sub.add_parser(
        "fit",
        help="fit a model to a NONMEM-style dataset and write a parameter report",
        description="Maximum-likelihood fit with lmfit and exact gradients; writes "
        "report.md/.html, parameters.csv/.json and figures to --out.",
    )
    fit.add_argument("model", help="shipped model name or path to a model .py file")
    fit.add_argument("data", type=Path, help="dataset CSV (see docs/data-format.md)")
    fit.add_argument(
        "--estimate",
        default="",
        metavar="A,B,...",
        help="parameters shared by all subjects (comma-separated); population fits: "
        "their typical values, NAME or NAME=INITIAL",
    )
    fit.add_argument(
        "--per-subject",
        default="",
        metavar="A,B,...",
        help="parameters with one value per subject (comma-separated)",
    )
    fit.add_argument(
        "--error",
        action="append",
        default=[],
        type=_error_model,
        metavar="OBS=KIND:VALUE[:VALUE]",
        help="error model of an observable: additive:a, proportional:b, "
        "combined:a:b or lognormal:s (initial values); repeatable",
    )
    fit.add_argument(
        "--subjects", default="", metavar="ID,...", help="fit only these subjects (default: all)"
    )
    fit.add_argument(
        "--blq",
        choices=["M3", "M1"],
        default="M3",
        help="values below the limit: M3 likelihood (default) or M1 discard",
    )
    fit.add_argument("--starts", type=int, default=1, help="Latin-hypercube starts")
    fit.add_argument("--workers", type=int, default=1, help="processes for the starts")
    fit.add_argument("--seed", type=int, default=0, help="seed of the starts")
    fit.add_argument(
        "--profiles",
        action="store_true",
        help="likelihood profiles of the shared parameters and sigmas",
    )
    fit.add_argument(
        "--covariates",
        default="",
        metavar="A,B,...",
        help="covariate columns of the dataset (kept; population fits plot the random "
        "effects against them)",
    )
    fit.add_argument(
        "--method",
        type=str.upper,
        choices=["ML", "FOCEI", "FOCE", "FO", "LAPLACE", "SAEM"],
        default="ML",
        help="ML: fixed effects per subject (default); FOCEI, FOCE, FO, LAPLACE or SAEM: "
        "a population (mixed-effects) fit of the --estimate parameters as log-normal "
        "typical values, with random effects from --eta",
    )
    fit.add_argument(
        "--eta",
        action="append",
        default=[],
        type=_eta,
        metavar="NAME=VARIANCE",
        help="population fits: a log-normal random effect on NAME with this initial "
        "variance (NONMEM $OMEGA); repeatable",
    )
    fit.add_argument(
        "--covariance",
        choices=["lin", "sa", "S", "sandwich", "R", "none"],
        default=None,
        help="population fits: standard errors (FOCE family: sandwich (default), R, S; "
        "SAEM: lin (default), sa, S); none skips them",
    )
    fit.add_argument(
        "--replicates",
        type=int,
        default=200,
        help="population fits: simulated replicates for the VPC and NPDE (0: none)",
    )
    fit.add_argument("--out", type=Path, required=True, help="report folder to write")
    return parser


def _eta(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        variance = float(value)
    except ValueError:
        variance = math.nan
    if not name.strip() or not (variance > 0 and math.isfinite(variance)):
        raise argparse.ArgumentTypeError(
            f"random effect {text!r} is not NAME=VARIANCE with a positive variance (e.g. CL=0.1)"
        )
    return name.strip(), variance


def _error_model(text: str):
    from pkpd_cart.errors import InputError
    from pkpd_cart.estimation.likelihood import ErrorModel

    kinds = {
        "additive": ErrorModel.additive,
        "proportional": ErrorModel.proportional,
        "combined": ErrorModel.combined,
        "combined1": ErrorModel.combined1,
        "lognormal": ErrorModel.lognormal,
    }
    obs, _, spec = text.partition("=")
    kind = spec.split(":")[0]
    if obs.strip() and spec and kind not in kinds:
        raise argparse.ArgumentTypeError(
            f"error model {text!r}: unknown kind {kind!r}; choose one of {', '.join(kinds)}"
        )
    try:
        kind, *values = spec.split(":")
        numbers = [float(v) for v in values]
        return obs.strip(), kinds[kind](*numbers)
    except InputError as exc:  # well formed, but a value outside its domain
        raise argparse.ArgumentTypeError(f"error model {text!r}: {exc}") from None
    except (ValueError, KeyError, TypeError):
        raise argparse.ArgumentTypeError(
            f"error model {text!r} is not OBS=KIND:VALUE (e.g. CAR_T=lognormal:0.3 or "
            "B_cells=combined:1:0.2)"
        ) from None


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
        from pkpd_cart.model.docs import model_page

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
            from pkpd_cart.reporting.plotting import plot_simulation

            plot_simulation(model, frame, path=args.plot)
            print(f"wrote {args.plot}")
    elif args.command == "fit" and args.method != "ML":
        _population_fit(args)
    elif args.command == "fit":
        if args.eta or args.covariance:
            raise pk.InputError("--eta and --covariance need a population --method (e.g. FOCEI)")
        from pkpd_cart.estimation.fitting import fit
        from pkpd_cart.estimation.uncertainty import profile_likelihood
        from pkpd_cart.reporting.report import write_fit_report

        model = pk.load_model(args.model)
        data = pk.read_dataset(args.data, model=model, covariates=_names(args.covariates))
        print(data.report())
        result = fit(
            model,
            data,
            estimate=_names(args.estimate),
            per_subject=_names(args.per_subject),
            error_models=dict(args.error),
            subjects=_names(args.subjects) or None,
            blq=args.blq,
            starts=args.starts,
            seed=args.seed,
            workers=args.workers,
            progress=args.starts > 1,
        )
        profiles = None
        if args.profiles:
            shared = [s.name for s in result.problem.specs if s.subject is None]
            profiles = profile_likelihood(result, shared, executor=max(args.workers, 1))
        settings = {
            "command": "pkpd-cart fit",
            "estimated (shared)": args.estimate or "-",
            "estimated (per subject)": args.per_subject or "-",
            "BLQ": args.blq,
            "starts": args.starts,
        }
        write_fit_report(
            result,
            args.out,
            f"Fit of {model.name} to {args.data.name}",
            settings,
            profiles,
            seed=args.seed,
        )
        print(f"OFV {result.ofv:.3f}; report: {args.out / 'report.md'}")
        for warning in result.warnings:
            print(f"WARNING: {warning}", file=sys.stderr)


def _population_fit(args: argparse.Namespace) -> None:
    """``pkpd-cart fit --method FOCEI|...|SAEM``: a population fit and its report."""
    import pkpd_cart as pk
    from pkpd_cart.reporting.population_report import write_population_report

    unsupported = [
        flag
        for flag, used in (
            ("--per-subject", args.per_subject),
            ("--subjects", args.subjects),
            ("--profiles", args.profiles),
            ("--starts", args.starts != 1),
            ("--blq M1", args.blq != "M3"),
        )
        if used
    ]
    if unsupported:
        raise pk.InputError(f"{', '.join(unsupported)} cannot be used with --method {args.method}")
    saem = args.method == "SAEM"
    allowed = ("lin", "sa", "S", "none") if saem else ("sandwich", "R", "S", "none")
    if args.covariance is not None and args.covariance not in allowed:
        raise pk.InputError(
            f"--covariance {args.covariance} is not available with --method {args.method}; "
            f"choose one of {', '.join(allowed)}"
        )
    if args.replicates < 0 or args.replicates == 1:
        raise pk.InputError(f"--replicates must be 0 or >= 2, not {args.replicates}")
    model = pk.load_model(args.model)
    data = pk.read_dataset(args.data, model=model, covariates=_names(args.covariates))
    print(data.report())
    initial: dict[str, float] = {}
    for item in _names(args.estimate):  # NAME or NAME=INITIAL
        name, eq, value = item.partition("=")
        try:
            initial[name.strip()] = float(value) if eq else math.nan
        except ValueError:
            raise pk.InputError(f"--estimate {item!r} is not NAME or NAME=INITIAL") from None
    estimate = list(initial)
    if not estimate:
        raise pk.InputError("a population fit needs --estimate (the parameters to estimate)")
    etas = dict(args.eta)
    for name in [*estimate, *etas]:
        if name not in model.parameters:
            raise pk.InputError(
                f"model '{model.name}' has no parameter '{name}' (parameters: "
                f"{', '.join(model.parameters)})"
            )
    stray = [n for n in etas if n not in estimate]
    if stray:
        raise pk.InputError(f"--eta {', '.join(stray)}: give the parameter in --estimate too")
    pop = pk.PopulationModel(model)
    for name in estimate:
        start = model.parameters[name].value if math.isnan(initial[name]) else initial[name]
        if not start > 0:
            raise pk.InputError(f"--estimate {name}: a log-normal typical value must be > 0")
        pop.log_normal(name, start, etas.get(name))
    for obs, em in args.error:
        pop.error(obs, em)
    default = "lin" if saem else "sandwich"
    covariance = None if args.covariance == "none" else (args.covariance or default)
    if saem:
        options = pk.SaemOptions(seed=args.seed, progress=True)
        result = pk.fit_saem(pop, data, options, covariance=covariance)
    else:
        executor = args.workers if args.workers > 1 else None
        result = pk.fit_population(
            pop, data, method=args.method, covariance=covariance, executor=executor
        )
    settings = {
        "command": "pkpd-cart fit",
        "method": args.method,
        "estimated (log-normal typical values, initial)": ", ".join(
            f"{n}={pop.thetas['tv_' + n].value:g}" for n in estimate
        ),
        "random effects (initial variances)": ", ".join(f"{k}={v:g}" for k, v in etas.items())
        or "none",
    }
    write_population_report(
        result,
        data,
        args.out,
        f"{args.method} fit of {model.name} to {args.data.name}",
        settings,
        n_replicates=args.replicates,
        seed=args.seed,
    )
    print(result.summary())
    print(f"report: {args.out / 'report.md'}")
    for warning in result.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except PkpdCartError as exc:
        print(f"pkpd-cart: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader stopped early (`pkpd-cart docs MODEL | head`)
        import os

        try:  # what is still buffered goes nowhere, so exiting raises nothing either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
