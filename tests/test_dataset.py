"""Dataset reader: round trips, unit conversions, and every bad-input class's message."""

import numpy as np
import pandas as pd
import pytest

import pkpd_cart as pk

GOOD = """\
# a test dataset
ID,TIME,DV,DVID,EVID,AMT,CMT,MDV,CENS,LIMIT,UNIT,WT,AGE,SEX
1,-6,80,B_cells,0,,,0,0,,cells/uL,60,20,F
1,0,,,1,6e7,CAR_D,1,0,,,60,20,F
1,9,0.05,CAR_T,0,,,0,0,,10^9/L,60,20,F
1,14,,B_cells,0,,,0,1,1,cells/uL,60,20,F
1,28,,anti_dsDNA,0,,,1,0,,IU/mL,60,20,F
2,-6,120,anti_dsDNA,0,,,0,0,,IU/mL,75,22,M
2,0,,,1,7.5e7,CAR_D,1,0,,,75,22,M
2,9,25,CAR_T,0,,,0,0,,% of CD3+,75,22,M
2,9,400,CD3,0,,,0,0,,cells/uL,75,22,M
"""


@pytest.fixture(scope="module")
def sle():
    return pk.load_model("sle_cart")


def write(tmp_path, text, name="data.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_read_types_and_summary(tmp_path, sle):
    data = pk.read_dataset(write(tmp_path, GOOD), model=sle)
    f = data.frame
    assert data.subjects == ["1", "2"]
    assert list(f["ROW"]) == list(range(3, 12))  # file lines: comment 1, header 2
    assert f["EVID"].dtype.kind == "i" and f["TIME"].dtype.kind == "f"
    assert data.header == ("# a test dataset",)
    assert not data.synthetic
    # 0.05 x 10^9/L = 50 cells/uL; 25% of 400 CD3+ cells/uL = 100 cells/uL
    car = data.observations().set_index(["ID", "DVID"])["DV"]
    assert car[("1", "CAR_T")] == pytest.approx(50.0)
    assert car[("2", "CAR_T")] == pytest.approx(100.0)
    s = data.summary().set_index(["ID", "DVID"])
    assert s.loc[("1", "B_cells"), "observations"] == 2
    assert s.loc[("1", "B_cells"), "below_LLOQ"] == 1
    assert s.loc[("1", "anti_dsDNA"), "ignored_MDV"] == 1
    assert bool(s.loc[("2", "CD3"), "auxiliary"])
    report = data.report()
    assert "1: B_cells 2 (1 <LLOQ)" in report and "[1 ignored, MDV=1]" in report
    assert data.covariates().loc["2", "WT"] == 75.0
    assert data.covariates().loc["1", "SEX"] == "F"


def test_round_trip(tmp_path):
    first = pk.read_dataset(write(tmp_path, GOOD))
    first.write(tmp_path / "again.csv")
    second = pk.read_dataset(tmp_path / "again.csv")
    assert second.header == first.header
    pd.testing.assert_frame_equal(first.frame.drop(columns="ROW"), second.frame.drop(columns="ROW"))


@pytest.mark.parametrize(
    "unit, model_unit, factor",
    [
        ("cells/mL", "cells/uL", 1e-3),
        ("10^9/L", "cells/uL", 1e3),
        ("G/L", "cells/uL", 1e3),
        ("cells/µL", "cells/uL", 1.0),
        ("cells/mm3", "cells/uL", 1.0),
        ("IU/L", "IU/mL", 1e-3),
        ("fraction", "%", 100.0),
        ("% of baseline", "1", 0.01),
    ],
)
def test_unit_conversion_factors(unit, model_unit, factor):
    from pkpd_cart.data.units import conversion_factor

    assert conversion_factor(unit, model_unit) == factor


def test_limit_is_converted_with_dv(tmp_path, sle):
    text = "ID,TIME,DV,DVID,EVID,CENS,LIMIT,UNIT\n1,5,,B_cells,0,1,2000,cells/mL\n"
    data = pk.read_dataset(write(tmp_path, text), model=sle)
    assert data.frame["LIMIT"].iloc[0] == pytest.approx(2.0)


def test_synthetic_flag(tmp_path):
    text = "# SYNTHETIC: simulated\nID,TIME,DV,DVID,EVID,SYNTHETIC\n1,0,1,B_cells,0,1\n"
    assert pk.read_dataset(write(tmp_path, text)).synthetic


HEAD = "ID,TIME,DV,DVID,EVID,AMT,CMT,CENS,LIMIT,UNIT\n"


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "1,0,5,B_cells,0,,,0,,cells/uL\n1,abc,5,B_cells,0,,,0,,cells/uL\n",
            "row 3, column TIME: 'abc' is not a number",
        ),
        ("1,0,inf,B_cells,0,,,0,,cells/uL\n", "row 2, column DV: 'inf' is not a finite number"),
        (
            "1,5,5,B_cells,0,,,0,,cells/uL\n1,2,5,B_cells,0,,,0,,cells/uL\n",
            "row 3, column TIME: time 2 is earlier than the previous record of subject 1 (5); "
            "sort by ID and TIME",
        ),
        (
            "1,5,5,B_cells,0,,,0,,cells/uL\n1,5,6,B_cells,0,,,0,,cells/uL\n",
            "row 3: duplicate record: same ID, TIME, EVID, DVID and CMT as row 2",
        ),
        (
            "1,5,5,B_count,0,,,0,,cells/uL\n",
            "row 2, column DVID: unknown observable 'B_count'; observables of model 'sle_cart':",
        ),
        (
            "1,5,5,B_cells,0,,,0,,cells/dL\n",
            "row 2, column UNIT: unknown unit 'cells/dL' for B_cells (model unit cells/uL; "
            "accepted:",
        ),
        ("1,5,,B_cells,0,,,1,,cells/uL\n", "row 2, column LIMIT: value is missing"),
        ("1,0,,,1,,CAR_D,0,,\n", "row 2, column AMT: value is missing"),
        ("1,0,,,1,-5,CAR_D,0,,\n", "row 2, column AMT: dose amount -5 is not positive"),
        (
            "1,0,,,1,6e7,CAR_E,0,,\n",
            "row 2, column CMT: state 'CAR_E' is not a dose target of model 'sle_cart' (CAR_D)",
        ),
        ("1,0,5,B_cells,2,,,0,,cells/uL\n", "row 2, column EVID: 2 is not one of 0, 1"),
        ("1,0,5,B_cells,0,,,0,,cells/uL,extra\n", "row 2: expected 10 fields, found 11"),
        ("1,0,,B_cells,0,,,0,,cells/uL\n", "row 2, column DV: value is missing"),
    ],
)
def test_bad_records_name_file_row_column(tmp_path, sle, body, message):
    path = write(tmp_path, HEAD + body)
    with pytest.raises(pk.DatasetError) as info:
        pk.read_dataset(path, model=sle)
    text = str(info.value)
    assert text.startswith(f"{path}: {message}"), text
    assert "\n" not in text


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "file is empty"),
        ("   \n\n", "file is empty"),
        ("# only a comment\n", "no column header line and no records"),
        ("ID,TIME,DV,DVID,EVID\n", "no records"),
        ("ID,TIME,DV,DVID\n1,0,5,B_cells\n", "column EVID: required column is missing"),
        (
            "ID,TIME,DV,DVID,EVID,Weight\n1,0,5,B_cells,0,60\n",
            "column Weight: unknown column (did you mean WT?); allowed: ID, TIME",
        ),
        (
            "ID,TIME,DV,DVID,EVID,wt\n1,0,5,B_cells,0,60\n",
            "column wt: unknown column (did you mean WT?)",
        ),
        (
            "ID,TIME,DV,DVID,EVID,WT\n1,0,5,B_cells,0,60\n1,1,5,B_cells,0,61\n",
            "row 3, column WT: subject 1 has more than one value (60.0, 61.0); time-varying "
            "covariates are not supported",
        ),
    ],
)
def test_bad_files(tmp_path, sle, content, message):
    path = write(tmp_path, content)
    with pytest.raises(pk.DatasetError) as info:
        pk.read_dataset(path, model=sle)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


def test_wrong_encoding_and_missing_file(tmp_path):
    path = write(tmp_path, "ID,TIME,DV,DVID,EVID,NOTE\n1,0,5,B_cells,0,Müller\n".encode("latin-1"))
    with pytest.raises(
        pk.DatasetError,
        match=r"row 2: not UTF-8 text \(byte 0xfc\); save the "
        r"file as UTF-8 CSV$",
    ):
        pk.read_dataset(path)
    with pytest.raises(pk.DatasetError, match="nope.csv: file not found$"):
        pk.read_dataset(tmp_path / "nope.csv")


def test_percent_cd3_needs_cd3_count(tmp_path, sle):
    text = HEAD + "1,9,25,CAR_T,0,,,0,,% of CD3+\n"
    with pytest.raises(pk.DatasetError, match="% of CD3\\+ needs a CD3 record"):
        pk.read_dataset(write(tmp_path, text), model=sle)


def test_negative_times_and_frames(sle):
    frame = pd.DataFrame(
        {
            "ID": [1, 1],
            "TIME": [-6.0, 3.0],
            "DV": [80, 10],
            "DVID": ["B_cells", "B_cells"],
            "EVID": [0, 0],
        }
    )
    data = pk.dataset_from_frame(frame, model=sle)
    assert list(data.frame["TIME"]) == [-6.0, 3.0]
    assert np.all(data.frame["UNIT"] == "cells/uL")


def test_template_for_figure_values_is_a_valid_dataset(sle):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "fits" / "data"
    data = pk.read_dataset(
        path / "mackensen2022_timecourse_TEMPLATE.csv", model=sle, covariates=["SLEDAI_BL"]
    )
    assert not data.synthetic
    assert data.observations().empty  # the example rows are MDV=1 until filled in
    assert len(data.observations(include_ignored=True)) == 5
    assert (data.frame["SLEDAI_BL"] == 16).all()  # patient 1's published baseline
