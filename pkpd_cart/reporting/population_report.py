"""The report of a population fit (FOCE-family or SAEM): Markdown + HTML, CSVs, figures.

:func:`write_population_report` writes one folder, completely or not at all:

* ``report.md`` and ``report.html``: model, data (SYNTHETIC where it applies), method and
  settings, run time of every stage, objective (OFV, -2LL, AIC, BIC with the n used),
  the parameter table (theta; Omega as variance, SD and CV%, with shrinkage; sigma as SD
  and variance; SE, RSE%, 95% CI), NPDE summary, warnings, figures;
* ``parameters.csv``, ``ebes.csv``, ``individual.csv``, ``diagnostics.csv`` (every record:
  PRED, IPRED, IWRES, CWRES), ``npde.csv``, ``vpc_<observable>.csv`` and
  ``pcvpc_<observable>.csv``; for a synthetic-data
  fit every CSV starts with a ``data`` column reading ``SYNTHETIC``;
* figures, each labelled with its observable and unit, and "SYNTHETIC data" in its title
  where it applies: goodness of fit per observable (DV vs PRED and IPRED, CWRES vs time
  and PRED; records below the LLOQ drawn at the LLOQ as open triangles), individual fits,
  random-effect distributions and random effects against covariates, VPC and
  prediction-corrected VPC (Bergstrand et al. 2011) per observable,
  NPDE (QQ plot, histogram, against time and PRED), and SAEM's convergence.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pkpd_cart.reporting.output import atomic_directory  # noqa: E402
from pkpd_cart.reporting.plotting import binned_median, residual_guides  # noqa: E402
from pkpd_cart.reporting.report import _fmt, _html, figures_markdown, versions  # noqa: E402

SYNTHETIC_NOTE = (
    "> **SYNTHETIC DATA.** This fit uses simulated data, not patient measurements; its "
    "estimates describe the simulation, not patients."
)


def _csv(frame: pd.DataFrame, path: Path, synthetic: bool, index: bool = False) -> None:
    frame = frame.copy()
    if synthetic:
        frame.insert(0, "data", "SYNTHETIC")
    frame.to_csv(path, index=index)


def _title(text: str, synthetic: bool) -> str:
    return text + (" - SYNTHETIC data" if synthetic else "")


def figure_gof(diag: pd.DataFrame, obs: str, unit: str, time_unit: str, path, synthetic):
    from scipy import stats

    d = diag[diag["DVID"] == obs]
    cens = d["CENS"].to_numpy() != 0
    dv = np.where(cens, d["LIMIT"].to_numpy(), d["DV"].to_numpy())
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    cwres = d["CWRES"].to_numpy(dtype=float)
    ok = np.isfinite(cwres)
    ax = axes[0, 2]
    if ok.sum() > 2:
        (osm, osr), _ = stats.probplot(cwres[ok], dist="norm")
        ax.plot(osm, osr, "o", ms=3)
    ax.plot([-3, 3], [-3, 3], "k-", lw=0.8)
    ax.set_xlabel("N(0,1) quantiles")
    ax.set_ylabel("CWRES quantiles")
    ax.set_title("QQ plot of CWRES (uncensored)", fontsize=9)
    ax = axes[1, 2]
    iwres = d["IWRES"].to_numpy(dtype=float)
    ax.plot(d["IPRED"], iwres, "o", ms=3, alpha=0.6)
    bx, by = binned_median(d["IPRED"].to_numpy(dtype=float), iwres)
    ax.plot(bx, by, "r-", lw=1.2, label="binned median")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel(f"IPRED ({unit})")
    ax.set_ylabel("IWRES")
    ax.legend(fontsize=7)
    for ax, col in zip(axes[0], ("PRED", "IPRED")):
        pred = d[col].to_numpy()
        ax.plot(pred[~cens], dv[~cens], "o", ms=3, alpha=0.6, label="observed")
        if cens.any():
            ax.plot(
                pred[cens], dv[cens], "v", ms=5, mfc="none", color="C3", label="< LLOQ (at LLOQ)"
            )
        finite = np.concatenate([pred[np.isfinite(pred)], dv[np.isfinite(dv)]])
        if len(finite):
            lo, hi = float(finite.min()), float(finite.max())
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.set_xlabel(f"{col} ({unit})")
        ax.set_ylabel(f"DV ({unit})")
        ax.legend(fontsize=7)
    for ax, (col, label) in zip(
        axes[1], (("TIME", f"time ({time_unit})"), ("PRED", f"PRED ({unit})"))
    ):
        x, y = d[col].to_numpy(), d["CWRES"].to_numpy()
        ax.plot(x, y, "o", ms=3, alpha=0.6)
        bx, by = binned_median(x, y)
        ax.plot(bx, by, "r-", lw=1.2, label="binned median")
        residual_guides(ax)
        ax.set_xlabel(label)
        ax.set_ylabel("CWRES")
        ax.legend(fontsize=7)
    fig.suptitle(_title(f"Goodness of fit: {obs} ({unit})", synthetic))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_individual(result, data, obs: str, unit: str, time_unit: str, path, synthetic):
    """Observed records and the individual (IPRED) and typical (PRED) courses on a fine
    grid, first 12 subjects; doses dotted; BLQ records at the LLOQ as open triangles."""
    from pkpd_cart.estimation.population_objective import subjects_from_dataset
    from pkpd_cart.simulation.solver import simulate

    pop = result.population
    model = pop.model
    diag = result.diagnostics
    d = diag[diag["DVID"] == obs]
    ids = list(dict.fromkeys(d["ID"]))[:12]
    subjects = {s.id: s for s in subjects_from_dataset(pop, data)}
    individual = result.individual.set_index(result.individual["ID"].astype(str))
    k = list(model.observables).index(obs)
    seen = np.concatenate([d["DV"].to_numpy(dtype=float), d["LIMIT"].to_numpy(dtype=float)])
    seen = seen[np.isfinite(seen)]
    # a log axis for a positive observable spanning more than a decade; linear otherwise
    # (bounded scores and ratios such as SLEDAI-2K or a titre relative to baseline)
    log_axis = bool(len(seen) and seen.min() > 0 and seen.max() / seen.min() > 10)
    cols = min(4, len(ids))
    rows = math.ceil(len(ids) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    for ax, sid in zip(axes.ravel(), ids):
        s = d[d["ID"] == sid].sort_values("TIME")
        subj = subjects[str(sid)]
        cens = s["CENS"].to_numpy() != 0
        t = s["TIME"].to_numpy()
        grid = np.unique(np.concatenate([np.linspace(t.min(), t.max(), 300), t]))
        starts = [model.start_time, float(grid[0])] + [x.time for x in subj.doses]
        typical = pop.individual_parameters(np.zeros(len(pop.etas)), subj.covariates)
        courses = {"PRED": typical}
        if str(sid) in individual.index:
            row = individual.loc[str(sid)]
            courses["IPRED"] = np.array([float(row[n]) for n in model.parameters])
        for label, params in courses.items():
            try:
                traj = simulate(model, grid, params=params, doses=subj.doses, t0=min(starts))
            except Exception:  # noqa: BLE001 - a failed course is left out of the figure
                continue
            style = {"PRED": ("C1", "--"), "IPRED": ("C0", "-")}[label]
            ax.plot(grid, traj.observables[:, k], color=style[0], ls=style[1], lw=1,
                    label=label)  # fmt: skip
        ax.plot(t[~cens], s["DV"].to_numpy()[~cens], "ko", ms=3)
        if cens.any():
            ax.plot(t[cens], s["LIMIT"].to_numpy()[cens], "v", mfc="none", color="C3", ms=5)
        for dose in subj.doses:
            ax.axvline(dose.time, color="grey", lw=0.6, ls=":")
        if log_axis:
            ax.set_yscale("log")
            ax.set_ylim(seen.min() / 20, seen.max() * 5)
        else:
            ax.margins(y=0.1)  # no point on the frame
        ax.set_title(f"ID {sid}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(ids) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=6)
    fig.supxlabel(f"time ({time_unit}); dotted: doses; triangles: < LLOQ at the LLOQ",
                  fontsize=8)  # fmt: skip
    fig.supylabel(f"{obs} ({unit})", fontsize=8)
    fig.suptitle(_title(f"Individual fits: {obs} (first {len(ids)} subjects)", synthetic))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_etas(result, covariates: pd.DataFrame | None, path, synthetic) -> None:
    pop = result.population
    etas = list(pop.etas)
    cov_names = [] if covariates is None else [c for c in covariates.columns if c != "ID"]
    cols = 1 + len(cov_names)
    fig, axes = plt.subplots(len(etas), cols, figsize=(3.4 * cols, 2.6 * len(etas)), squeeze=False)
    for i, name in enumerate(etas):
        values = result.ebes[name].to_numpy(dtype=float)
        ax = axes[i, 0]
        ax.hist(values, bins="auto", density=True, alpha=0.6)
        w = math.sqrt(result.omega[i, i])
        grid = np.linspace(-3.5 * w, 3.5 * w, 200)
        ax.plot(grid, np.exp(-0.5 * (grid / w) ** 2) / (w * math.sqrt(2 * math.pi)), "k-", lw=1)
        shrink = result.shrinkage.set_index("eta").loc[name, "shrinkage_sd_pct"]
        ax.set_title(f"{name}: EBEs vs N(0, omega); shrinkage {shrink:.0f}%", fontsize=8)
        for j, c in enumerate(cov_names, start=1):
            merged = result.ebes[["ID", name]].merge(covariates, on="ID")
            axes[i, j].plot(merged[c], merged[name], "o", ms=3)
            axes[i, j].axhline(0, color="k", lw=0.8)
            axes[i, j].set_xlabel(c, fontsize=8)
            axes[i, j].set_ylabel(name, fontsize=8)
    fig.suptitle(_title("Random effects (EBEs)", synthetic))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_npde(table: pd.DataFrame, time_unit: str, path, synthetic) -> None:
    from scipy import stats

    values = table["NPDE"].to_numpy(dtype=float)
    ok = np.isfinite(values)
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    (osm, osr), _ = stats.probplot(values[ok], dist="norm")
    axes[0, 0].plot(osm, osr, "o", ms=3)
    axes[0, 0].plot([-3, 3], [-3, 3], "k-", lw=0.8)
    axes[0, 0].set_xlabel("N(0,1) quantiles")
    axes[0, 0].set_ylabel("NPDE quantiles")
    axes[0, 1].hist(values[ok], bins="auto", density=True, alpha=0.6)
    grid = np.linspace(-4, 4, 200)
    axes[0, 1].plot(grid, stats.norm.pdf(grid), "k-", lw=1)
    axes[0, 1].set_xlabel("NPDE")
    for ax, col, label in (
        (axes[1, 0], "TIME", f"time ({time_unit})"),
        (axes[1, 1], "PRED", "PRED (observable units)"),
    ):
        for k, (obs, grp) in enumerate(table.groupby("DVID")):
            ax.plot(grp[col], grp["NPDE"], "o", ms=3, color=f"C{k}", label=str(obs))
        residual_guides(ax)
        ax.set_xlabel(label)
        ax.set_ylabel("NPDE")
        ax.legend(fontsize=7)
    fig.suptitle(_title("NPDE (decorrelated; BLQ records imputed)", synthetic))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_correlation(result, path, synthetic) -> None:
    from pkpd_cart.reporting.plotting import plot_correlation

    names = [r.name for r in result.parameters.itertuples() if not r.fixed]
    plot_correlation(result.correlation, names, path,
                     _title("Correlation of the estimates", synthetic))  # fmt: skip


def parameter_rows(result) -> pd.DataFrame:
    """The parameter table with each random effect's shrinkage."""
    table = result.parameters.copy()
    shrink = dict(zip(result.shrinkage["eta"], result.shrinkage["shrinkage_sd_pct"]))
    table["shrinkage_pct"] = [
        shrink.get(n[len("OMEGA(") : -1], np.nan) if k == "omega" else np.nan
        for k, n in zip(table["kind"], table["name"])
    ]
    return table


def write_population_report(
    result,
    data,
    out: str | Path,
    title: str,
    settings: Mapping[str, object] | None = None,
    n_replicates: int = 200,
    seed: int = 0,
    data_note: str = "",
    sections: Sequence[tuple[str, str]] = (),
    tables: Mapping[str, pd.DataFrame] | None = None,
    figures: Sequence[tuple[str, Callable[[Path], None]]] = (),
) -> Path:
    """Write the report folder ``out`` of a population fit ``result`` (from
    :func:`~pkpd_cart.fit_population` or :func:`~pkpd_cart.fit_saem`) on ``data``;
    ``n_replicates`` simulated replicates of the design for the VPC and NPDE (0: none).

    An analysis adds its own parts: ``sections`` (title, Markdown) placed before the
    figures, ``tables`` (file stem -> DataFrame) written as CSVs, and ``figures``
    (caption, function writing a PNG to the path it is given)."""
    from pkpd_cart.errors import InputError
    from pkpd_cart.estimation.population_result import PopulationFitResult
    from pkpd_cart.estimation.predictive import npde, simulate_design, vpc

    if not isinstance(result, PopulationFitResult):
        raise InputError(
            f"write_population_report needs a population fit result, not {type(result).__name__}"
        )
    from pkpd_cart.data.dataset import Dataset

    if not isinstance(data, Dataset):
        raise InputError(
            f"write_population_report needs the fitted Dataset, not {type(data).__name__}"
        )
    if not isinstance(n_replicates, int) or n_replicates == 1 or n_replicates < 0:
        raise InputError(f"n_replicates must be 0 or an integer >= 2, not {n_replicates!r}")
    out = Path(out)
    synthetic = bool(result.synthetic or getattr(data, "synthetic", False))
    model = result.population.model
    time_unit = model.time_unit
    units = {name: o.unit for name, o in model.observables.items()}
    timings = dict(result.timings)
    table = parameter_rows(result)
    diag = result.diagnostics
    replicates = vpcs = npde_table = None
    if n_replicates:
        t = time.perf_counter()
        replicates = simulate_design(result.population, data, n=n_replicates, seed=seed)
        vpcs = {}
        for obs in sorted(set(replicates.observable)):
            vpcs[obs] = vpc(replicates, obs)
            vpcs[f"{obs} (prediction-corrected)"] = vpc(replicates, obs, prediction_corrected=True)
        timings["VPC"] = time.perf_counter() - t
        t = time.perf_counter()
        npde_table = npde(replicates, seed=seed)
        npde_table["PRED"] = replicates.pred  # the typical prediction (eta = 0)
        timings["NPDE"] = time.perf_counter() - t
    frame = data.frame
    covariates = None
    if result.population.covariates:
        names = [c for c in result.population.covariates if c in frame]
        covariates = frame.groupby("ID", sort=False)[names].first().reset_index()
        covariates["ID"] = covariates["ID"].astype(result.ebes["ID"].dtype)
    with atomic_directory(out) as tmp:
        _csv(table, tmp / "parameters.csv", synthetic)
        _csv(result.ebes, tmp / "ebes.csv", synthetic)
        _csv(result.individual, tmp / "individual.csv", synthetic)
        _csv(diag, tmp / "diagnostics.csv", synthetic)
        for stem, frame_ in (tables or {}).items():
            _csv(frame_, tmp / f"{stem}.csv", synthetic)
        extra_figures = figures
        figures = []
        for k, (caption, draw) in enumerate(extra_figures):
            name = f"analysis_{k + 1}.png"
            draw(tmp / name)
            figures.append((caption, name))
        for obs in sorted(set(diag["DVID"])) if len(diag) else []:
            name = f"gof_{obs}.png"
            figure_gof(diag, obs, units.get(obs, ""), time_unit, tmp / name, synthetic)
            figures.append((f"Goodness of fit: {obs} ({units.get(obs, '')})", name))
            name = f"individual_{obs}.png"
            figure_individual(result, data, obs, units.get(obs, ""), time_unit, tmp / name,
                              synthetic)  # fmt: skip
            figures.append((f"Individual fits: {obs}", name))
        if result.correlation is not None and np.all(np.isfinite(result.correlation)):
            figure_correlation(result, tmp / "correlation.png", synthetic)
            figures.append(("Correlation of the estimates", "correlation.png"))
            free = [r.name for r in table.itertuples() if not r.fixed]
            corr = pd.DataFrame(result.correlation, index=free, columns=free)
            _csv(corr.reset_index(names="parameter"), tmp / "correlation.csv", synthetic)
        if result.population.etas and len(result.ebes):
            figure_etas(result, covariates, tmp / "etas.png", synthetic)
            figures.append(("Random effects and covariates", "etas.png"))
        if vpcs:
            for v in vpcs.values():
                obs = v.observable
                stem = f"pcvpc_{obs}" if v.prediction_corrected else f"vpc_{obs}"
                fig = v.plot(tmp / f"{stem}.png", unit=units.get(obs, ""))
                plt.close(fig)
                figures.append((f"{'pcVPC' if v.prediction_corrected else 'VPC'}: {obs} "
                                f"({units.get(obs, '')})", f"{stem}.png"))  # fmt: skip
                _csv(v.to_frame(), tmp / f"{stem}.csv", synthetic)
        if npde_table is not None:
            _csv(npde_table, tmp / "npde.csv", synthetic)
            figure_npde(npde_table, time_unit, tmp / "npde.png", synthetic)
            figures.append(("NPDE", "npde.png"))
        if hasattr(result, "plot_convergence") and result.history:
            fig = result.plot_convergence(tmp / "convergence.png")
            plt.close(fig)
            figures.append(("SAEM convergence", "convergence.png"))
        payload = {
            "model": model.name,
            "model_hash": model.hash,
            "data": getattr(data, "source", ""),
            "synthetic_data": synthetic,
            "method": result.method,
            "ofv": result.ofv,
            "aic": result.aic,
            "bic": result.bic,
            "n_estimated": result.n_estimated,
            "n_observations": result.n_observations,
            "n_subjects": result.n_subjects,
            "warnings": list(result.warnings),
            "timings_s": timings,
            "settings": {k: str(v) for k, v in (settings or {}).items()},
            "seed": seed,
            "versions": versions(),
            "parameters": json.loads(table.to_json(orient="records")),
        }
        (tmp / "parameters.json").write_text(json.dumps(payload, indent=2) + "\n")
        md = _markdown(
            result, data, title, settings or {}, table, figures, timings, npde_table,
            synthetic, data_note, seed, n_replicates, sections,
        )  # fmt: skip
        (tmp / "report.md").write_text(md)
        (tmp / "report.html").write_text(_html(md, title))
    return out


def _markdown(
    result, data, title, settings, table, figures, timings, npde_table, synthetic,
    data_note, seed, n_replicates, sections=(),
) -> str:  # fmt: skip
    model = result.population.model
    lines = [f"# {title}", ""]
    if synthetic:
        lines += [SYNTHETIC_NOTE, ""]
    lines += [
        "## Model and data",
        "",
        f"- Model: `{model.name}` (hash `{model.hash[:12]}`): {model.description}",
        f"- Data: `{getattr(data, 'source', '')}`" + (" (**synthetic**)" if synthetic else ""),
        f"- {result.n_subjects} subjects, {result.n_observations} observation records, "
        f"{result.n_censored} below the limit of quantification (M3 likelihood)",
    ]
    if data_note:
        lines.append(f"- Provenance: {data_note}")
    pop = result.population
    lines += [
        f"- Estimated: thetas {', '.join(result.theta)}; random effects "
        f"{', '.join(pop.etas) or 'none'}; residual errors "
        + ", ".join(f"{o}:{n}" for o, n in result.sigma),
        "",
        "| model parameter | how it is set | value | unit | source |",
        "|---|---|---|---|---|",
    ]
    for name, par in model.parameters.items():
        expr = pop.individual_expressions.get(name)
        if expr is None:
            how, value = "fixed (model value)", _fmt(par.value)
        else:
            etas = [e for e in pop.etas if e in {str(x) for x in expr.free_symbols}]
            covs = [c for c in pop.covariates if c in {str(x) for x in expr.free_symbols}]
            how = "estimated" + (f", random effect {', '.join(etas)}" if etas else
                                 ", no random effect") + (
                f", covariate {', '.join(covs)}" if covs else "")  # fmt: skip
            if not {str(x) for x in expr.free_symbols} & set(result.theta):
                how = "from covariate " + ", ".join(covs) if covs else "expression"
            value = f"`{expr}`"
        source = getattr(par, "source", "") or ""
        lines.append(f"| {name} | {how} | {value} | {par.unit} | {source} |")
    lines += [
        "",
        "## Method and settings",
        "",
        f"- Estimation: {result.method}"
        + (
            f"; covariance: {result.covariance_method}"
            if result.covariance_method
            else "; no covariance step"
        ),  # fmt: skip
    ]
    lines += [f"- {k}: {v}" for k, v in settings.items()]
    lines += [
        f"- Seed (replicates): {seed}; replicates for VPC and NPDE: {n_replicates}",
        "- Run time: " + "; ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        "## Objective",
        "",
    ]
    n_normal = result.n_observations - result.n_censored
    lines.append(
        f"OFV {result.ofv:.3f} (-2 log-likelihood without the {n_normal} log 2pi constant, "
        f"as NONMEM); -2LL {result.ofv_with_constant:.3f}; AIC {result.aic:.3f}; BIC "
        f"{result.bic:.3f} ({result.n_estimated} estimated parameters, BIC's n = "
        f"{result.n_observations} observations)."
    )
    if hasattr(result, "minus2ll_se"):
        lines += [
            "",
            f"SAEM: -2LL by importance sampling {result.minus2ll:.3f} (Monte Carlo SE "
            f"{result.minus2ll_se:.3f}); by linearisation {result.minus2ll_lin:.3f}; FOCE-I "
            f"OFV at the SAEM estimates {result.ofv_focei:.3f}; {result.chains} chain(s), "
            f"k1 = {result.options.k1}, k2 = {result.options.k2}, seed {result.options.seed}.",
        ]
    lines.append("")
    for w in result.warnings:
        lines += [f"> **WARNING:** {w}", ""]
    if pop.priors:
        from pkpd_cart.estimation.priors import contributions

        theta = np.array(list(result.theta.values()))
        lines += [
            "## Priors",
            "",
            f"Maximum a posteriori: the objective is the OFV plus -2 log prior "
            f"({result.prior_ofv:.3f} at the estimates, without normalising constants).",
            "",
            "| prior | weight | -2 log prior at the estimates | source |",
            "|---|---|---|---|",
        ]
        for prior, value in contributions(pop, theta, result.omega):
            weight = f"SD {prior.sd:g}" if hasattr(prior, "sd") else f"df {prior.df:g}"
            lines.append(f"| {prior.describe()} | {weight} | {value:.3f} | {prior.source} |")
        lines.append("")
    lines += [
        "## Estimates",
        "",
        "| parameter | estimate | SE | RSE % | 95% CI | SD | CV % | shrinkage % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        se = "fixed" if r.fixed else _fmt(r.se, 3)
        lines.append(
            f"| {r.name} | {_fmt(r.estimate)} | {se} | {_fmt(r.rse_pct, 3)} | "
            f"[{_fmt(r.lower_95)}, {_fmt(r.upper_95)}] | {_fmt(r.sd)} | {_fmt(r.cv_pct, 3)} "
            f"| {_fmt(r.shrinkage_pct, 3)} |"
        )
    lines += [
        "",
        "Thetas on their natural scale; OMEGA as variances (SD and CV% = "
        "100 sqrt(exp(omega) - 1) for log-normal parameters); SIGMA as SDs. 95% CI: Wald, "
        "on the log scale for variances and SDs. Shrinkage: 100 (1 - SD(EBE) / omega^1/2) "
        "(NONMEM's ETASHRINKSD); the residual one from IWRES.",
        "",
    ]
    if npde_table is not None:
        v = npde_table["NPDE"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        lines += [
            "## NPDE",
            "",
            f"{len(v)} records: mean {np.mean(v):.3f} (expected 0), variance "
            f"{np.var(v, ddof=1):.3f} (expected 1).",
            "",
        ]
    for heading, body in sections:
        lines += [f"## {heading}", "", body.rstrip(), ""]
    lines += figures_markdown(figures)
    lines += [
        "## Files",
        "",
        "`parameters.csv`/`.json`, `ebes.csv`, `individual.csv`, `diagnostics.csv`, "
        "`correlation.csv`"
        + (
            ", `npde.csv`, `vpc_<observable>.csv`, `pcvpc_<observable>.csv`"
            if npde_table is not None
            else ""
        )  # fmt: skip
        + (" (each with a first column `data` = SYNTHETIC)" if synthetic else "")
        + ", and the figures above.",
        "",
    ]
    return "\n".join(lines)
