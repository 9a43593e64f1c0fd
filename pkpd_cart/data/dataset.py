"""NONMEM-style long datasets: read, validate, convert units, summarise.

One record per row. Columns (upper case):

=========  ========================================================================
ID         subject identifier (text or number)
TIME       days from the CAR-T infusion; negative before it (e.g. baseline samples)
DV         observed value (observation rows); empty on dose rows
DVID       observable name of the model (e.g. ``B_cells``); ``CD3`` is auxiliary
EVID       0 observation, 1 dose
AMT        dose amount (dose rows), in the target state's unit
RATE       infusion rate (dose rows, amount per time unit); 0 or empty: bolus; -2: the
           duration is in DUR (NONMEM); -1 (rate defined in the model) is refused
DUR        infusion duration (time units) of a dose with RATE=-2
CMT        dose target state (dose rows), e.g. ``CAR_D``
MDV        1: the observation is missing or to be ignored (kept and reported)
CENS       1: below the lower limit of quantification, ``LIMIT`` holds that limit
LIMIT      lower limit of quantification, in ``UNIT``
UNIT       unit of DV and LIMIT (see :mod:`pkpd_cart.data.units`)
WT AGE SEX per-subject covariates (kg, years, F/M); constant within a subject
(others)   numeric covariate columns declared with ``covariates=[...]`` (e.g. NONMEM's
           ``WGT``, ``APGR``); empty cells allowed (dose rows)
SYNTHETIC  1 on every row of simulated (not measured) data
SOURCE     free text: where the value comes from (e.g. "Fig. 2b, digitised")
NOTE       free text
=========  ========================================================================

Lines starting with ``#`` at the top of the file are a header kept with the data.
Rows are numbered as lines of the file (the column header line included), so an error
message points at the line an editor shows.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from pkpd_cart.data.units import PERCENT_OF_CD3, accepted_units, conversion_factor, normalise
from pkpd_cart.errors import DatasetError
from pkpd_cart.model.modelling import Model

STANDARD = [
    "ID", "TIME", "DV", "DVID", "EVID", "AMT", "RATE", "DUR", "CMT", "MDV", "CENS", "LIMIT", "UNIT"
]  # fmt: skip
COVARIATES = ["WT", "AGE", "SEX"]
METADATA = ["SYNTHETIC", "SOURCE", "NOTE"]
REQUIRED = ["ID", "TIME", "EVID"]
AUXILIARY = {"CD3": "CD3+ T cells (cells/uL), used to convert CAR-T % of CD3+"}
NUMERIC_COVARIATES = {"WT": (20.0, 250.0), "AGE": (0.0, 120.0)}
SEX_VALUES = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M", "0": "M", "1": "F"}


@dataclass(frozen=True)
class Dataset:
    """A validated dataset.

    Attributes
    ----------
    frame : DataFrame
        All records, typed: ``ID`` (str), ``TIME``/``DV``/``AMT``/``LIMIT`` (float),
        ``EVID``/``MDV``/``CENS`` (int), ``DVID``/``CMT``/``UNIT`` (str), covariates, and
        ``ROW`` (the line of the file the record came from).
    source : str
        File name (or ``"<frame>"``).
    header : tuple of str
        The ``#`` comment lines at the top of the file.
    converted_to : str or None
        Name of the model whose units the values are in, once converted.
    """

    frame: pd.DataFrame = field(repr=False)
    source: str
    header: tuple[str, ...] = ()
    converted_to: str | None = None
    extra_covariates: tuple[str, ...] = ()

    @property
    def synthetic(self) -> bool:
        """True when any record is marked ``SYNTHETIC=1`` or a header line starts with
        ``# SYNTHETIC``."""
        flagged = "SYNTHETIC" in self.frame and bool((self.frame["SYNTHETIC"] == 1).any())
        return flagged or any(
            line.lstrip("# ").upper().startswith("SYNTHETIC") for line in self.header
        )

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(self.frame["ID"]))

    def subject(self, subject_id: str) -> pd.DataFrame:
        return self.frame[self.frame["ID"] == str(subject_id)]

    def observations(self, include_ignored: bool = False) -> pd.DataFrame:
        """Observation records of model observables (``MDV=1`` rows only if asked)."""
        f = self.frame
        keep = (f["EVID"] == 0) & ~f["DVID"].isin(list(AUXILIARY))
        if not include_ignored:
            keep &= f["MDV"] == 0
        return f[keep]

    def doses(self) -> pd.DataFrame:
        return self.frame[self.frame["EVID"] == 1]

    def covariates(self) -> pd.DataFrame:
        """One row per subject with its covariates (those present in the file)."""
        cols = [c for c in [*COVARIATES, *self.extra_covariates] if c in self.frame]
        return (
            self.frame.groupby("ID", sort=False)[cols].first()
            if cols
            else pd.DataFrame(index=pd.Index(self.subjects, name="ID"))
        )

    def summary(self) -> pd.DataFrame:
        """What was loaded, per subject and observable: counts and time range."""
        f = self.frame
        obs = f[f["EVID"] == 0]
        rows = []
        for (sid, dvid), g in obs.groupby(["ID", "DVID"], sort=False):
            rows.append(
                {
                    "ID": sid,
                    "DVID": dvid,
                    "observations": int((g["MDV"] == 0).sum()),
                    "below_LLOQ": int(((g["CENS"] == 1) & (g["MDV"] == 0)).sum()),
                    "ignored_MDV": int((g["MDV"] == 1).sum()),
                    "auxiliary": dvid in AUXILIARY,
                    "first_day": float(g["TIME"].min()),
                    "last_day": float(g["TIME"].max()),
                }
            )
        for sid, g in f[f["EVID"] == 1].groupby("ID", sort=False):
            rows.append(
                {
                    "ID": sid,
                    "DVID": "(dose)",
                    "observations": len(g),
                    "below_LLOQ": 0,
                    "ignored_MDV": 0,
                    "auxiliary": False,
                    "first_day": float(g["TIME"].min()),
                    "last_day": float(g["TIME"].max()),
                }
            )
        return pd.DataFrame(rows)

    def report(self) -> str:
        """A short text of what was loaded (for scripts to print)."""
        s = self.summary()
        label = " (SYNTHETIC data)" if self.synthetic else ""
        lines = [f"{self.source}{label}: {len(self.subjects)} subjects, {len(self.frame)} records"]
        for sid, g in s.groupby("ID", sort=False):
            parts = []
            for r in g.itertuples():
                text = f"{r.DVID} {r.observations}"
                if r.below_LLOQ:
                    text += f" ({r.below_LLOQ} <LLOQ)"
                if r.ignored_MDV:
                    text += f" [{r.ignored_MDV} ignored, MDV=1]"
                if r.auxiliary:
                    text += " [auxiliary]"
                parts.append(text)
            lines.append(f"  {sid}: " + ", ".join(parts))
        return "\n".join(lines)

    def subset(self, subject_ids) -> Dataset:
        """The records of ``subject_ids`` only (e.g. leave-one-subject-out)."""
        import dataclasses

        from pkpd_cart.errors import InputError

        ids = [str(s) for s in subject_ids]
        unknown = [s for s in ids if s not in self.subjects]
        if unknown:
            raise InputError(f"{self.source}: no subject(s) {', '.join(unknown)}")
        frame = self.frame[self.frame["ID"].isin(ids)].copy()
        return dataclasses.replace(self, frame=frame)

    def for_model(self, model: Model) -> Dataset:
        """Check observables and dose targets against ``model`` and convert units to its units."""
        return _convert(self, model)

    def write(self, path: str | Path) -> None:
        """Write the dataset (header lines first) as CSV; ``read_dataset`` reads it back."""
        cols = [c for c in self.frame.columns if c != "ROW"]
        body = self.frame[cols].to_csv(index=False, lineterminator="\n", float_format="%.6g")
        text = "".join(f"{line}\n" for line in self.header) + body
        Path(path).write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class SubjectRecords:
    """One subject's observation records laid out for simulation and a likelihood.

    ``times`` are the distinct observation times (sorted); per record, ``t_index`` points
    into them and ``o_index`` into the model's observables; ``doses`` are the subject's
    bolus doses (:class:`~pkpd_cart.simulation.solver.Dose`); ``records`` the rows used.
    """

    id: str
    times: np.ndarray
    t_index: np.ndarray
    o_index: np.ndarray
    y: np.ndarray
    censored: np.ndarray  # bool: below the limit of quantification
    limit: np.ndarray
    doses: list
    records: pd.DataFrame = field(repr=False)


def subject_records(
    dataset: Dataset,
    observables: Sequence[str],
    subjects: Sequence[str] | None = None,
    drop_censored: bool = False,
) -> list[SubjectRecords]:
    """Per-subject observation layouts (``subjects`` in their order, default all; those
    without observations left out). Used by the fixed-effects and the population fits."""
    obs = dataset.observations()
    if drop_censored:
        obs = obs[obs["CENS"] == 0]
    obs_by_subject = dict(tuple(obs.groupby("ID", sort=False)))
    doses_by_subject = dict(tuple(dataset.doses().groupby("ID", sort=False)))
    names = list(observables)
    out = []
    for sid in subjects if subjects is not None else dataset.subjects:
        rec = obs_by_subject.get(sid)
        if rec is None or rec.empty:
            continue
        time = rec["TIME"].to_numpy(dtype=float)
        times = np.unique(time)
        doses = (
            [_dose(r) for r in doses_by_subject[sid].itertuples()]
            if sid in doses_by_subject
            else []
        )
        out.append(
            SubjectRecords(
                sid,
                times,
                np.searchsorted(times, time),
                np.array([names.index(d) for d in rec["DVID"]], dtype=np.int64),
                rec["DV"].to_numpy(dtype=float),
                rec["CENS"].to_numpy() == 1,
                rec["LIMIT"].to_numpy(dtype=float),
                doses,
                rec,
            )
        )
    return out


def _dose(record):
    """The :class:`Dose` of a dose record (bolus, or infusion from RATE / DUR)."""
    from pkpd_cart.simulation.solver import Dose

    rate = float(getattr(record, "RATE", 0.0))
    if rate == -2:
        return Dose(float(record.TIME), float(record.AMT), str(record.CMT), duration=record.DUR)
    return Dose(float(record.TIME), float(record.AMT), str(record.CMT), rate=rate)


def _fail(source: str, row: int | None, column: str | None, problem: str) -> DatasetError:
    where = source
    if row is not None:
        where += f": row {row}"
    if column is not None:
        where += f", column {column}" if row is not None else f": column {column}"
    return DatasetError(f"{where}: {problem}")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror})") from None
    if not raw.strip():
        raise DatasetError(f"{path}: file is empty")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}: row {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file "
            "as UTF-8 CSV"
        ) from None


def read_dataset(
    path: str | Path, model: Model | None = None, covariates: Sequence[str] = ()
) -> Dataset:
    """Read and validate a NONMEM-style CSV dataset (see the module docstring).

    With ``model``, observables and dose targets are checked against it and values are
    converted to its units. ``covariates`` names further numeric columns to keep (e.g.
    ``["WGT", "APGR"]``), which a population model can use.

    Raises
    ------
    DatasetError
        One line naming the file, row, column and the problem.
    """
    path = Path(path)
    text = _read_text(path)
    lines = text.splitlines()
    header = []
    for line in lines:
        if line.startswith("#"):
            header.append(line.rstrip())
        else:
            break
    body = "\n".join(lines[len(header) :])
    if not body.strip():
        raise DatasetError(f"{path}: no column header line and no records")
    rows = list(csv.reader(io.StringIO(body), skipinitialspace=True))
    names = [c.strip() for c in rows[0]]
    records, lines_of = [], []
    for k, fields in enumerate(rows[1:]):
        line = len(header) + 2 + k
        if not any(cell.strip() for cell in fields):
            continue  # blank line
        if len(fields) != len(names):
            raise DatasetError(
                f"{path}: row {line}: expected {len(names)} fields, found {len(fields)}"
            )
        records.append(fields)
        lines_of.append(line)
    raw = (
        pd.DataFrame(records, columns=names, dtype=str)
        if records
        else pd.DataFrame(columns=names, dtype=str)
    )
    raw.insert(0, "ROW", np.asarray(lines_of, dtype=int))
    return _validate(raw, str(path), tuple(header), model, tuple(covariates))


def dataset_from_frame(
    frame: pd.DataFrame,
    source: str = "<frame>",
    model: Model | None = None,
    header: tuple[str, ...] = (),
    covariates: Sequence[str] = (),
) -> Dataset:
    """Validate an in-memory DataFrame with the same rules as :func:`read_dataset`."""
    raw = frame.astype(object).map(
        lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    )
    raw.insert(0, "ROW", np.arange(len(raw)) + 2)
    return _validate(raw, source, header, model, tuple(covariates))


def _numbers(raw: pd.DataFrame, column: str, source: str, required_mask=None) -> pd.Series:
    """Column as floats; empty cells are NaN unless required; anything else is an error."""
    out = np.full(len(raw), np.nan)
    for i, (cell, row) in enumerate(zip(raw[column], raw["ROW"])):
        cell = cell.strip()
        needed = True if required_mask is None else bool(required_mask.iloc[i])
        if cell == "" or cell == ".":
            if needed:
                raise _fail(source, int(row), column, "value is missing")
            continue
        try:
            value = float(cell)
        except ValueError:
            raise _fail(source, int(row), column, f"{cell!r} is not a number") from None
        if not math.isfinite(value):
            raise _fail(source, int(row), column, f"{cell!r} is not a finite number")
        out[i] = value
    return pd.Series(out, index=raw.index)


def _integers(raw, column, source, allowed, default=None) -> pd.Series:
    if column not in raw:
        return pd.Series(default, index=raw.index, dtype=int)
    values = _numbers(
        raw, column, source, required_mask=pd.Series(default is None, index=raw.index)
    )
    values = values.fillna(default) if default is not None else values
    for v, row in zip(values, raw["ROW"]):
        if v not in allowed:
            raise _fail(
                source,
                int(row),
                column,
                f"{v:g} is not one of {', '.join(str(a) for a in sorted(allowed))}",
            )
    return values.astype(int)


def _infusions(raw: pd.DataFrame, out: pd.DataFrame, source: str, is_dose: pd.Series) -> None:
    """RATE and DUR as NONMEM reads them (only when the columns are there)."""
    if "RATE" not in raw and "DUR" not in raw:
        return
    no = pd.Series(False, index=raw.index)
    rate = _numbers(raw, "RATE", source, no).fillna(0.0) if "RATE" in raw else 0.0 * no
    dur = _numbers(raw, "DUR", source, no).fillna(0.0) if "DUR" in raw else 0.0 * no
    for r, d, row, dose in zip(rate, dur, out["ROW"], is_dose):
        row = int(row)
        if not dose:
            if r != 0 or d != 0:
                raise _fail(
                    source,
                    row,
                    "RATE" if r else "DUR",
                    "only dose records (EVID=1) take a RATE or DUR",
                )
            continue
        if r == -1:
            raise _fail(
                source,
                row,
                "RATE",
                "RATE=-1 (a rate defined in the model) is not "
                "supported; give RATE > 0, or RATE=-2 with DUR",
            )
        if r < 0 and r != -2:
            raise _fail(source, row, "RATE", f"{r:g} is not a rate >= 0, -1 or -2")
        if r == -2 and not d > 0:
            raise _fail(source, row, "DUR", "RATE=-2 needs a duration DUR > 0")
        if r != -2 and d != 0:
            raise _fail(source, row, "DUR", f"DUR is used only with RATE=-2 (RATE is {r:g})")
        if d < 0:
            raise _fail(source, row, "DUR", f"{d:g} is negative")
    out["RATE"] = rate
    out["DUR"] = dur


def _validate(
    raw: pd.DataFrame,
    source: str,
    header: tuple[str, ...],
    model: Model | None,
    extra: tuple[str, ...] = (),
) -> Dataset:
    raw = raw.rename(columns=lambda c: c.strip())
    columns = [c for c in raw.columns if c != "ROW"]
    known = STANDARD + COVARIATES + METADATA
    for c in extra:
        if isinstance(c, str) and c in known:
            raise DatasetError(
                f"{source}: covariates=: {c!r} is a standard column, kept without declaring it"
            )
        if not isinstance(c, str) or not c.isidentifier():
            raise DatasetError(f"{source}: covariates=: {c!r} is not a column name")
        if c not in columns:
            raise _fail(source, None, c, "declared covariate column is missing")
    if len(columns) == 1 and ";" in columns[0]:
        raise _fail(
            source,
            None,
            None,
            "the columns are separated by semicolons; save the file as comma-separated CSV",
        )
    for c in columns:
        if c not in known and c not in extra:
            import difflib

            same_letters = [k for k in known if sorted(k) == sorted(c.upper())]  # VD, TMIE
            close = same_letters or difflib.get_close_matches(c.upper(), known, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise _fail(
                source,
                None,
                c,
                f"unknown column{hint}; allowed: {', '.join(known)}, and covariate columns "
                "declared with covariates=[...]",
            )
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise _fail(source, None, dup, "column appears twice")
    for c in REQUIRED:
        if c not in columns:
            raise _fail(source, None, c, "required column is missing")
    blank = raw[columns].apply(lambda col: col.str.strip() == "").all(axis=1)
    raw = raw[~blank].reset_index(drop=True)
    if raw.empty:
        raise DatasetError(f"{source}: no records")

    out = pd.DataFrame({"ROW": raw["ROW"].astype(int)})
    out["ID"] = raw["ID"].str.strip()
    for sid, row in zip(out["ID"], out["ROW"]):
        if sid == "":
            raise _fail(source, int(row), "ID", "value is missing")
    out["TIME"] = _numbers(raw, "TIME", source)
    out["EVID"] = _integers(raw, "EVID", source, {0, 1})
    is_obs, is_dose = out["EVID"] == 0, out["EVID"] == 1
    out["MDV"] = _integers(raw, "MDV", source, {0, 1}, default=0)
    out.loc[is_dose, "MDV"] = 1
    out["CENS"] = _integers(raw, "CENS", source, {0, 1}, default=0)

    if is_obs.any() and "DVID" not in columns:
        raise _fail(source, None, "DVID", "required column is missing (observations need it)")
    if is_obs.any() and "DV" not in columns:
        raise _fail(source, None, "DV", "required column is missing (observations need it)")
    out["DVID"] = raw["DVID"].str.strip() if "DVID" in raw else ""
    for dvid, row, obs in zip(out["DVID"], out["ROW"], is_obs):
        if obs and dvid == "":
            raise _fail(source, int(row), "DVID", "value is missing")
    needs_dv = is_obs & (out["MDV"] == 0) & (out["CENS"] == 0)
    out["DV"] = _numbers(raw, "DV", source, required_mask=needs_dv) if "DV" in raw else np.nan
    out["LIMIT"] = (
        _numbers(raw, "LIMIT", source, required_mask=is_obs & (out["CENS"] == 1))
        if "LIMIT" in raw
        else np.nan
    )
    if ((out["CENS"] == 1) & is_obs).any() and "LIMIT" not in raw:
        row = int(out.loc[(out["CENS"] == 1) & is_obs, "ROW"].iloc[0])
        raise _fail(source, row, "LIMIT", "censored record (CENS=1) needs a LIMIT column")
    for lim, row in zip(out["LIMIT"], out["ROW"]):
        if not np.isnan(lim) and lim <= 0:
            raise _fail(source, int(row), "LIMIT", f"{lim:g} is not a positive limit")
    out["AMT"] = _numbers(raw, "AMT", source, required_mask=is_dose) if "AMT" in raw else np.nan
    if is_dose.any() and "AMT" not in raw:
        raise _fail(
            source,
            int(out.loc[is_dose, "ROW"].iloc[0]),
            "AMT",
            "dose record (EVID=1) needs an AMT column",
        )
    for amt, row, dose in zip(out["AMT"], out["ROW"], is_dose):
        if dose and amt <= 0:
            raise _fail(source, int(row), "AMT", f"dose amount {amt:g} is not positive")
    _infusions(raw, out, source, is_dose)
    out["CMT"] = raw["CMT"].str.strip() if "CMT" in raw else ""
    for cmt, row, dose in zip(out["CMT"], out["ROW"], is_dose):
        if dose and cmt == "":
            raise _fail(source, int(row), "CMT", "dose record needs a target state (CMT)")
    out["UNIT"] = raw["UNIT"].str.strip() if "UNIT" in raw else ""

    for c in COVARIATES:
        if c not in raw:
            continue
        if c in NUMERIC_COVARIATES:
            lo, hi = NUMERIC_COVARIATES[c]
            out[c] = _numbers(raw, c, source, required_mask=pd.Series(False, index=raw.index))
            for v, row in zip(out[c], out["ROW"]):
                if not np.isnan(v) and not lo <= v <= hi:
                    raise _fail(
                        source,
                        int(row),
                        c,
                        f"{v:g} is outside the plausible range [{lo:g}, {hi:g}]",
                    )
        else:
            values = []
            for v, row in zip(raw[c].str.strip().str.upper(), out["ROW"]):
                if v and v not in SEX_VALUES:
                    raise _fail(source, int(row), c, f"{v!r} is not F or M")
                values.append(SEX_VALUES.get(v, ""))
            out[c] = values
        for sid, g in out.groupby("ID", sort=False):
            distinct = g[c].dropna().loc[lambda s: s != ""].unique()
            if len(distinct) > 1:
                row = int(g["ROW"].iloc[list(g[c]).index(distinct[1])])
                raise _fail(
                    source,
                    row,
                    c,
                    f"subject {sid} has more than one value "
                    f"({distinct[0]}, {distinct[1]}); time-varying covariates are not "
                    "supported",
                )
    for c in extra:
        out[c] = _numbers(raw, c, source, required_mask=pd.Series(False, index=raw.index))
    if "SYNTHETIC" in raw:
        out["SYNTHETIC"] = _integers(raw, "SYNTHETIC", source, {0, 1}, default=0)
    for c in ("SOURCE", "NOTE"):
        if c in raw:
            out[c] = raw[c]

    # order and duplicates
    for sid, g in out.groupby("ID", sort=False):
        times = g["TIME"].to_numpy()
        bad = np.flatnonzero(np.diff(times) < 0)
        if bad.size:
            row = int(g["ROW"].iloc[bad[0] + 1])
            raise _fail(
                source,
                row,
                "TIME",
                f"time {times[bad[0] + 1]:g} is earlier than the "
                f"previous record of subject {sid} ({times[bad[0]]:g}); sort by ID "
                "and TIME",
            )
    key = ["ID", "TIME", "EVID", "DVID", "CMT"]
    dup = out.duplicated(subset=key, keep="first")
    if dup.any():
        r = out[dup].iloc[0]
        first = out[(out[key] == r[key]).all(axis=1)]["ROW"].iloc[0]
        raise _fail(
            source,
            int(r["ROW"]),
            None,
            f"duplicate record: same ID, TIME, EVID, DVID and CMT as row {int(first)}",
        )
    dataset = Dataset(out.reset_index(drop=True), source, header, extra_covariates=extra)
    return dataset.for_model(model) if model is not None else dataset


def _convert(dataset: Dataset, model: Model) -> Dataset:
    """Check names against the model and convert DV and LIMIT to the model's units."""
    f = dataset.frame.copy()
    src = dataset.source
    for row in f.itertuples():
        if row.EVID == 1:
            if row.CMT not in model.states:
                raise _fail(
                    src,
                    row.ROW,
                    "CMT",
                    f"unknown dose target {row.CMT!r}; states of "
                    f"model '{model.name}': {', '.join(model.states)}",
                )
            if row.CMT not in model.dose_targets:
                raise _fail(
                    src,
                    row.ROW,
                    "CMT",
                    f"state {row.CMT!r} is not a dose target of "
                    f"model '{model.name}' ({', '.join(model.dose_targets)})",
                )
        elif row.DVID not in model.observables and row.DVID not in AUXILIARY:
            raise _fail(
                src,
                row.ROW,
                "DVID",
                f"unknown observable {row.DVID!r}; observables "
                f"of model '{model.name}': {', '.join(model.observables)}",
            )
    cd3 = {}
    for r in f.itertuples():
        if r.EVID == 0 and r.DVID == "CD3":
            factor = conversion_factor(r.UNIT or "cells/uL", "cells/uL")
            if factor is None:
                raise _fail(
                    src,
                    r.ROW,
                    "UNIT",
                    f"unknown unit {r.UNIT!r} for CD3 (accepted: "
                    f"{', '.join(accepted_units('cells/uL'))})",
                )
            cd3[(r.ID, r.TIME)] = r.DV * factor
    factors = np.ones(len(f))
    units = f["UNIT"].to_numpy(dtype=object).copy()
    known: dict[tuple[str, str], float | None] = {}  # (unit, target) -> factor
    for k, row in enumerate(f.itertuples()):
        if row.EVID != 0:
            continue
        target = model.observables[row.DVID].unit if row.DVID in model.observables else "cells/uL"
        unit = row.UNIT or target
        if normalise(unit) == normalise(PERCENT_OF_CD3) and target == "cells/uL":
            count = cd3.get((row.ID, row.TIME))
            if count is None:
                raise _fail(
                    src,
                    row.ROW,
                    "UNIT",
                    f"{PERCENT_OF_CD3} needs a CD3 record "
                    "(cells/uL) for the same ID and TIME, or use DVID CAR_T_pct_CD3",
                )
            factor = count / 100.0
        else:
            if (unit, target) not in known:
                known[(unit, target)] = conversion_factor(unit, target)
            factor = known[(unit, target)]
            if factor is None:
                raise _fail(
                    src,
                    row.ROW,
                    "UNIT",
                    f"unknown unit {unit!r} for {row.DVID} "
                    f"(model unit {target}; accepted: {', '.join(accepted_units(target))})",
                )
        factors[k] = factor
        units[k] = target
    observed = (f["EVID"] == 0).to_numpy()
    f.loc[observed, "DV"] = f.loc[observed, "DV"].to_numpy() * factors[observed]
    f.loc[observed, "LIMIT"] = f.loc[observed, "LIMIT"].to_numpy() * factors[observed]
    f["UNIT"] = units
    return replace(dataset, frame=f, converted_to=model.name)
