"""Parameter reports of a fit: Markdown + HTML, CSV + JSON, diagnostic figures.

:func:`write_fit_report` writes one folder, completely or not at all:

* ``report.md`` and ``report.html`` - model, data provenance (with the SYNTHETIC label
  where it applies), settings, seed, package versions, run time, warnings, estimates,
  derived quantities, figures;
* ``parameters.csv`` and ``parameters.json`` - estimate, unit, SE, RSE%, Wald and profile
  95% intervals, estimation-scale values;
* ``predictions.csv`` - every record with its prediction and weighted residual;
* figures: individual fits per observable (censored points marked), observed vs
  predicted, residuals vs time and vs prediction, likelihood profiles, multi-start
  waterfall, derived quantities per subject with their uncertainty.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pkpd_cart.estimation.uncertainty import CHI2_95, sample_estimates  # noqa: E402
from pkpd_cart.reporting.output import atomic_directory  # noqa: E402
from pkpd_cart.simulation.solver import simulate  # noqa: E402

Derived = Callable[[object, Mapping[str, float], list], Mapping[str, float]]


def versions() -> dict[str, str]:
    import lmfit
    import scipy
    import sympy

    import pkpd_cart

    out = {
        "pkpd_cart": pkpd_cart.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "sympy": sympy.__version__,
        "lmfit": lmfit.__version__,
        "pandas": pd.__version__,
    }
    try:
        import llvmlite
        import numba

        out["numba"] = numba.__version__
        out["llvmlite"] = llvmlite.__version__
    except ImportError:
        out["numba"] = "not installed (pure-Python backend)"
    return out


def parameter_table(result, profiles: Mapping | None = None) -> pd.DataFrame:
    """The estimates with profile intervals added (``profile_low``/``profile_high``)."""
    table = result.parameters.copy()
    table["profile_low"] = np.nan
    table["profile_high"] = np.nan
    table["identifiable"] = ""
    for i, name in enumerate(table["name"]):
        prof = (profiles or {}).get(name)
        if prof is not None:
            table.loc[i, "profile_low"] = prof.ci_low
            table.loc[i, "profile_high"] = prof.ci_high
            table.loc[i, "identifiable"] = "yes" if prof.identifiable else "NO"
    return table


def derived_per_subject(
    result, derived: Derived, n_draws: int = 100, seed: int = 0
) -> pd.DataFrame:
    """Derived quantities per subject at the estimates, with 95% intervals (2.5 and 97.5%
    quantiles, ``ci_low``/``ci_high``) from parametric draws of the estimates (skipped when
    there is no covariance)."""
    problem = result.problem
    draws = None
    if result.covariance is not None:
        draws = sample_estimates(result, n_draws, seed)
    rows = []
    for subj in problem.subjects:
        point = derived(problem.model, problem.subject_parameters(result.x, subj.id), subj.doses)
        samples = []
        if draws is not None:
            for x in draws:
                try:
                    samples.append(
                        derived(problem.model, problem.subject_parameters(x, subj.id), subj.doses)
                    )
                except Exception:  # noqa: BLE001 - a failed draw is skipped and counted
                    continue
        for name, value in point.items():
            vals = np.array([s[name] for s in samples if name in s], dtype=float)
            vals = vals[np.isfinite(vals)]
            lo, hi = np.quantile(vals, [0.025, 0.975]) if len(vals) > 10 else (np.nan, np.nan)
            rows.append(
                {
                    "subject": subj.id,
                    "quantity": name,
                    "estimate": float(value),
                    "ci_low": float(lo),
                    "ci_high": float(hi),
                    "draws": int(len(vals)),
                }
            )
    return pd.DataFrame(rows)


# -- figures ---------------------------------------------------------------------------
def _grid_axes(n: int, width: float = 3.2, height: float = 2.4):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def figure_individual_fits(
    result, observable: str, path: Path, label: str, predictions: pd.DataFrame | None = None
) -> None:
    """Observed and predicted courses of one observable, a panel per subject.

    ``predictions`` is ``result.predictions()`` when the caller already has it.
    """
    problem = result.problem
    model = problem.model
    obs = result.predictions() if predictions is None else predictions
    k = list(model.observables).index(observable)
    subjects = [s for s in problem.subjects if (s.records["DVID"] == observable).any()]
    fig, axes = _grid_axes(len(subjects))
    values = pd.concat([obs.loc[obs["DVID"] == observable, "DV"],
                        obs.loc[obs["DVID"] == observable, "LIMIT"]]).dropna()  # fmt: skip
    # a log axis only for a positive observable spanning more than a decade: scores and
    # ratios to baseline (SLEDAI-2K, vaccine titre) stay linear, zeros stay visible
    positive = bool(len(values) and (values > 0).all() and values.max() / values.min() > 10)
    for ax, subj in zip(axes, subjects):
        rec = obs[(obs["ID"] == subj.id) & (obs["DVID"] == observable)]
        t_end = float(rec["TIME"].max())
        grid = np.unique(
            np.concatenate(
                (np.linspace(min(rec["TIME"].min(), 0.0), t_end, 400), rec["TIME"].to_numpy())
            )
        )
        traj = simulate(
            model,
            grid,
            params=np.array(list(problem.subject_parameters(result.x, subj.id).values())),
            doses=subj.doses,
            options=problem.options,
            compiled=problem.compiled,
        )
        ax.plot(grid, traj.observables[:, k], color="C0", lw=1.3, label="prediction")
        for dose in subj.doses:
            ax.axvline(dose.time, color="0.4", lw=0.7, ls=":")
        seen = rec[rec["CENS"] == 0]
        ax.plot(seen["TIME"], seen["DV"], "o", color="k", ms=3.5, label="observed")
        cens = rec[rec["CENS"] == 1]
        if len(cens):
            ax.plot(
                cens["TIME"],
                cens["LIMIT"],
                "v",
                mfc="none",
                color="C3",
                ms=5,
                label="< LLOQ (at limit)",
            )
        if positive:
            ax.set_yscale("log")
            low = (
                np.nanmin(
                    np.concatenate((seen["DV"].to_numpy(), cens["LIMIT"].to_numpy(), [np.inf]))
                )
                / 20
            )
            if np.isfinite(low):
                ax.set_ylim(bottom=low)
        else:
            ax.margins(y=0.1)  # no point on the frame
        ax.set_title(f"subject {subj.id}", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"{observable} ({model.observables[observable].unit}) - {label}", fontsize=10)
    fig.supxlabel(f"time ({model.time_unit}); dotted: doses", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_gof(
    result, path: Path, predictions: pd.DataFrame | None = None, label: str = ""
) -> None:
    """One row per observable (with its unit): observed vs predicted (records below the
    LLOQ at the LLOQ, open triangles; zeros shown), IWRES vs time with a binned-median
    smoother, and a QQ plot of IWRES."""
    from scipy import stats

    from pkpd_cart.reporting.plotting import binned_median, residual_guides

    pred = result.predictions() if predictions is None else predictions
    model = result.problem.model
    names = sorted(set(pred["DVID"]))
    fig, axes = plt.subplots(len(names), 3, figsize=(12, 3.2 * len(names)), squeeze=False)
    for row, name in zip(axes, names):
        g = pred[pred["DVID"] == name]
        unit = model.observables[name].unit
        cens = g["CENS"].to_numpy() == 1
        dv = np.where(cens, g["LIMIT"].to_numpy(dtype=float), g["DV"].to_numpy(dtype=float))
        p = g["PRED"].to_numpy(dtype=float)
        row[0].plot(p[~cens], dv[~cens], "o", ms=3, label="observed")
        if cens.any():
            row[0].plot(p[cens], dv[cens], "v", mfc="none", color="C3", ms=5,
                        label="< LLOQ (at LLOQ)")  # fmt: skip
        both = np.concatenate([p, dv])
        both = both[np.isfinite(both)]
        if len(both) and both.min() > 0 and both.max() / both.min() > 10:
            row[0].set_xscale("log")
            row[0].set_yscale("log")
        if len(both):
            row[0].plot([both.min(), both.max()], [both.min(), both.max()], "k--", lw=0.8)
        row[0].set(xlabel=f"predicted ({unit})", ylabel=f"observed ({unit})", title=name)
        row[0].legend(fontsize=7)
        t, w = g["TIME"].to_numpy(dtype=float), g["IWRES"].to_numpy(dtype=float)
        row[1].plot(t, w, "o", ms=3)
        bx, by = binned_median(t, w, bins=min(8, max(2, int(np.isfinite(w).sum() // 4))))
        row[1].plot(bx, by, "r-", lw=1.2, label="binned median")
        row[1].set(xlabel=f"time ({model.time_unit})", ylabel="IWRES")
        row[1].legend(fontsize=7)
        ok = np.isfinite(w)
        if ok.sum() > 2:
            (osm, osr), _ = stats.probplot(w[ok], dist="norm")
            row[2].plot(osm, osr, "o", ms=3)
        row[2].plot([-3, 3], [-3, 3], "k--", lw=0.8)
        row[2].set(xlabel="N(0,1) quantiles", ylabel="IWRES quantiles", title="QQ plot")
        residual_guides(row[1])
        for ax in row:
            ax.grid(True, alpha=0.3)
    fig.suptitle(f"Goodness of fit{' - ' + label if label else ''}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_profiles(
    profiles: Mapping, path: Path, labels: Mapping[str, str] | None = None,
    estimates: Mapping[str, float] | None = None, title: str = "",
) -> None:  # fmt: skip
    """One panel per profile, titled by ``labels`` (parameter, subject and unit), with
    the estimate (solid) and the 95% profile interval (dashed) marked."""
    fig, axes = _grid_axes(len(profiles), 3.0, 2.3)
    for ax, prof in zip(axes, profiles.values()):
        ax.plot(prof.values, prof.delta_ofv, "o-", ms=3)
        ax.axhline(CHI2_95, color="C3", ls="--", lw=0.8)
        if estimates and prof.name in estimates:
            ax.axvline(estimates[prof.name], color="k", lw=0.9)
        for edge in (prof.ci_low, prof.ci_high):
            if np.isfinite(edge):
                ax.axvline(edge, color="C3", lw=0.8, ls="--")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(4))  # natural scale
        ax.tick_params(labelsize=7)
        ax.set_title(
            (labels or {}).get(prof.name, prof.name)
            + ("" if prof.identifiable else "  (NOT identifiable)"),
            fontsize=8,
            color="k" if prof.identifiable else "C3",
        )
        ax.set_ylim(bottom=-0.2, top=max(6.0, min(float(np.max(prof.delta_ofv)), 15.0)))
        ax.grid(True, alpha=0.3)
    fig.supylabel("OFV - min OFV", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_waterfall(result, path: Path, label: str = "") -> None:
    starts = result.starts
    fig, ax = plt.subplots(figsize=(6, 3.2))
    best = starts["ofv"].min()
    ax.plot(range(1, len(starts) + 1), starts["ofv"] - best, "o-", ms=4)
    ax.set(
        xlabel="start (sorted)",
        ylabel="OFV - best OFV",
        title=f"multi-start waterfall ({len(starts)} starts){' - ' + label if label else ''}",
    )
    ax.set_yscale("symlog", linthresh=1.0)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure_derived(table: pd.DataFrame, path: Path, label: str = "") -> None:
    quantities = list(dict.fromkeys(table["quantity"]))
    fig, axes = _grid_axes(len(quantities), 3.2, 2.4)
    for ax, q in zip(axes, quantities):
        g = table[table["quantity"] == q]
        x = np.arange(len(g))
        err = np.vstack(
            [
                (g["estimate"] - g["ci_low"]).clip(lower=0),
                (g["ci_high"] - g["estimate"]).clip(lower=0),
            ]
        )
        ax.errorbar(x, g["estimate"], yerr=np.nan_to_num(err), fmt="o", capsize=3)
        ax.set_xticks(x, g["subject"])
        ax.set_title(q, fontsize=8)
        ax.grid(True, alpha=0.3)
    fig.supxlabel("subject", fontsize=9)
    if label:
        fig.suptitle(f"Derived quantities - {label}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the report ------------------------------------------------------------------------
def _fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def write_fit_report(
    result,
    out: str | Path,
    title: str,
    settings: Mapping[str, object],
    profiles: Mapping | None = None,
    derived: Derived | None = None,
    data_note: str = "",
    seed: int | None = None,
    definitions: Mapping[str, str] | None = None,
    timings: Mapping[str, float] | None = None,
) -> Path:
    """Write the report folder ``out`` (replacing it only when everything succeeded).

    ``definitions``: what each derived quantity means (shown beside it); ``timings``:
    seconds of each stage of the analysis (the fit's own time is always shown)."""
    import time

    out = Path(out)
    model, data = result.model, result.dataset
    synthetic = data.synthetic
    table = parameter_table(result, profiles)
    started = time.perf_counter()
    derived_table = derived_per_subject(result, derived, seed=seed or 0) if derived else None
    stages = {"fit": result.seconds, **dict(timings or {})}
    if derived_table is not None:
        stages["derived quantities (100 draws)"] = time.perf_counter() - started

    def csv(frame: pd.DataFrame, name: str, index: bool = False) -> None:
        frame = frame.copy()
        if synthetic:  # every file of a synthetic-data fit says so
            frame.insert(0, "data", "SYNTHETIC")
        frame.to_csv(tmp / name, index=index)

    with atomic_directory(out) as tmp:
        csv(table, "parameters.csv")
        payload = {
            "model": model.name,
            "model_hash": model.hash,
            "data": data.source,
            "synthetic_data": synthetic,
            "ofv": result.ofv,
            "aic": result.aic,
            "bic": result.bic,
            "n_records": result.n_records,
            "n_censored": result.n_censored,
            "n_failed_simulations": result.n_failures,
            "warnings": result.warnings,
            "settings": {k: str(v) for k, v in settings.items()},
            "seed": seed,
            "versions": versions(),
            "parameters": json.loads(table.to_json(orient="records")),
        }
        (tmp / "parameters.json").write_text(json.dumps(payload, indent=2) + "\n")
        predictions = result.predictions()  # one simulation per subject, used below
        csv(predictions, "predictions.csv")
        figures = []
        label = "SYNTHETIC data" if synthetic else "data"
        names = {
            s.name: f"{s.quantity}" + (f" [{s.subject}]" if s.subject else "")
            + (f" ({s.unit})" if s.unit and s.unit != "1" else "")
            for s in result.problem.specs
        }  # fmt: skip
        if result.correlation is not None:
            csv(result.correlation.rename(index=names, columns=names), "correlation.csv",
                index=True)  # fmt: skip
            from pkpd_cart.reporting.plotting import plot_correlation

            plot_correlation(result.correlation.to_numpy(dtype=float),
                             [names.get(n, n) for n in result.correlation.columns],
                             tmp / "correlation.png",
                             f"Correlation of the estimates - {label}")  # fmt: skip
            figures.append(("Correlation of the estimates", "correlation.png"))
        for obs in sorted(set(predictions["DVID"])):
            name = f"fit_{obs}.png"
            figure_individual_fits(result, obs, tmp / name, label, predictions)
            figures.append((f"Individual fits: {obs}", name))
        figure_gof(result, tmp / "goodness_of_fit.png", predictions, label)
        figures.append(("Goodness of fit", "goodness_of_fit.png"))
        if profiles:
            estimates = {
                s.name: float(v)
                for s, v in zip(result.problem.specs, table["estimate"])
                if s.name in profiles
            }
            figure_profiles(profiles, tmp / "profiles.png", names, estimates,
                            f"Likelihood profiles (natural scale) - {label}")  # fmt: skip
            figures.append(("Likelihood profiles", "profiles.png"))
        if len(result.starts) > 1:
            figure_waterfall(result, tmp / "waterfall.png", label)
            figures.append(("Multi-start waterfall", "waterfall.png"))
        if derived_table is not None:
            csv(derived_table, "derived.csv")
            figure_derived(derived_table, tmp / "derived.png", label)
            figures.append(("Derived quantities per subject", "derived.png"))
        md = _markdown(result, title, settings, table, derived_table, figures, data_note, seed,
                       definitions or {}, stages)  # fmt: skip
        (tmp / "report.md").write_text(md)
        (tmp / "report.html").write_text(_html(md, title))
    return out


def _markdown(
    result, title, settings, table, derived_table, figures, data_note, seed,
    definitions=None, stages=None,
) -> str:  # fmt: skip
    model, data = result.model, result.dataset
    lines = [f"# {title}", ""]
    if data.synthetic:
        lines += [
            "> **SYNTHETIC DATA.** This fit uses simulated data, not patient "
            "measurements; its estimates describe the simulation, not the patients.",
            "",
        ]
    lines += [
        "## Model and data",
        "",
        f"- Model: `{model.name}` (hash `{model.hash[:12]}`): {model.description}",
        f"- Reference: {model.reference}",
        f"- Data: `{data.source}`" + (" (**synthetic**)" if data.synthetic else ""),
        f"- Records: {result.n_records} observations, {result.n_censored} below the "
        f"limit of quantification, in {len(result.problem.subjects)} subjects",
    ]
    if data_note:
        lines.append(f"- Provenance: {data_note}")
    lines += ["", "## Settings", ""]
    lines += [f"- {k}: {v}" for k, v in settings.items()]
    lines += [
        f"- Seed: {seed}" if seed is not None else "- Seed: none",
        "- Run time: "
        + "; ".join(f"{k} {v:.1f} s" for k, v in (stages or {}).items())
        + f"; {result.n_simulations} simulations; failed simulations (penalised): "
        f"{result.n_failures}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
    ]
    lines += [
        "## Objective",
        "",
        f"OFV (-2 log-likelihood, with constants) {result.ofv:.3f}; AIC {result.aic:.3f}; "
        f"BIC {result.bic:.3f} ({len(table)} estimated parameters; BIC's n = "
        f"{result.n_records} records); condition number of the correlation matrix "
        f"{_fmt(result.condition_number, 3)}.",
        "",
        "Initial values: "
        + ", ".join(
            f"{s.quantity}" + (f"[{s.subject}]" if s.subject else "") + f" = {s.initial:.4g}"
            for s in result.problem.specs
        )
        + ".",
        "",
    ]
    for w in result.warnings:
        lines += [f"> **WARNING:** {w}", ""]
    if not result.warnings:
        lines += ["No warnings.", ""]
    lines += [
        "## Estimates",
        "",
        "| parameter | subject | estimate | unit | SE | RSE % | Wald 95% CI | "
        "profile 95% CI | identifiable |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.quantity} | {r.subject} | {_fmt(r.estimate)} | {r.unit} | {_fmt(r.se, 3)} "
            f"| {_fmt(r.rse_pct, 3)} | [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] | "
            f"[{_fmt(r.profile_low)}, {_fmt(r.profile_high)}] | {r.identifiable or '-'} |"
        )
    lines += [
        "",
        "Positive parameters and sigmas are estimated on the log scale: their SE is "
        "back-transformed by the delta method, RSE % is 100 x the SE of the log "
        "estimate, and the Wald interval is exp(log estimate +/- 1.96 SE). Sigmas are "
        "`<observable>:add` (additive, observable unit), `:prop` (proportional) and "
        "`:log` (SD on the log scale). Covariance: inverse expected Fisher information "
        "from the forward sensitivities. Profile intervals: OFV + 3.84; '-' where a "
        "side stays open.",
        "",
    ]
    notes = table[table["identifiable"] == "NO"]
    if len(notes):
        lines += [
            "**Not identifiable from these data:** "
            + ", ".join(
                f"{r.quantity}" + (f" [{r.subject}]" if r.subject != "all" else "")
                for r in notes.itertuples()
            )
            + ".",
            "",
        ]
    if derived_table is not None:
        lines += ["## Derived quantities per subject", ""]
        lines += [f"- **{k}**: {v}" for k, v in (definitions or {}).items()]
        lines += [
            "",
            "| subject | quantity | estimate | 95% interval |",
            "|---|---|---|---|",
        ]
        for r in derived_table.itertuples():
            lines.append(
                f"| {r.subject} | {r.quantity} | {_fmt(r.estimate)} | "
                f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] |"
            )
        lines += [
            "",
            "Intervals from 100 parametric draws of the estimates (asymptotic "
            "normal on the estimation scale).",
            "",
        ]
    lines += figures_markdown(figures)
    lines += [
        "## Files",
        "",
        "`parameters.csv`, `parameters.json`, `predictions.csv`, "
        "`correlation.csv`"
        + (", `derived.csv`" if derived_table is not None else "")
        + ", and the figures above.",
        "",
    ]
    return "\n".join(lines)


def figures_markdown(figures) -> list[str]:
    """The Figures section: one captioned image per ``(caption, file name)``."""
    lines = ["## Figures", ""]
    for caption, name in figures:
        lines += [f"### {caption}", "", f"![{caption}]({name})", ""]
    return lines


def _html(markdown_text: str, title: str) -> str:
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;"
        "padding:3px 6px}blockquote{background:#fff4d6;border-left:4px solid #e0a000;"
        "margin:1em 0;padding:.5em 1em}img{max-width:100%}"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )
