"""The Python API's mistakes are flopcast errors, in one line, before any work (issue 25, item 9); pandas' string
dtypes and dates written as text are ordinary input."""

import numpy as np
import pandas as pd
import pytest
from helpers import one_stage_plan

from flopcast import Forecaster
from flopcast.budget.ledger import Ledger
from flopcast.errors import BadType, DataError, FlopcastError

FRAME = pd.DataFrame({"id": ["a"] * 6, "timestamp": range(6), "prey": np.linspace(1, 2, 6),
                      "pred": np.linspace(2, 3, 6)})


@pytest.fixture(scope="module")
def fc(tmp_path_factory):
    return Forecaster.from_pretrained("tiny-qwen2", ledger=tmp_path_factory.mktemp("l") / "l.db", budget=1e15)


@pytest.mark.parametrize("call, error, match", [
    (lambda fc: fc.predict(FRAME.iloc[:0]), DataError, "the table has no rows"),
    (lambda fc: fc.predict(FRAME, id_column="nope"), DataError, "id_column='nope' is not a column"),
    (lambda fc: fc.predict(FRAME, horizon=2.5), TypeError, "horizon must be an integer, got 2.5"),
    (lambda fc: fc.predict(FRAME, samples=2.5), TypeError, "n_samples must be an integer, got 2.5"),
    (lambda fc: fc.predict(FRAME, samples=2, quantiles=0.5), TypeError, "quantiles must be a list of numbers"),
    (lambda fc: fc.predict(FRAME, horizon=0), ValueError, "horizon must be >= 1"),
    (lambda fc: fc.predict(FRAME.assign(timestamp=["x"] * 6)), DataError, "neither numbers nor dates"),
])
def test_predict_mistakes_are_one_line_before_any_work(fc, call, error, match):
    used = fc.ledger.used()
    with pytest.raises(error, match=match) as e:
        call(fc)
    assert isinstance(e.value, FlopcastError) and "\n" not in str(e.value)
    assert fc.ledger.used() == used  # nothing was generated


def test_string_dtypes_and_text_dates_are_ordinary_input(fc):
    text = FRAME.astype({"id": "string", "prey": "string"}).assign(
        timestamp=[f"2024-01-0{i + 1}" for i in range(6)])
    out = fc.predict(text, horizon=2)
    assert list(out.columns) == ["id", "timestamp", "prey", "pred"]
    assert list(out["timestamp"]) == list(pd.date_range("2024-01-07", periods=2, freq="D"))
    plain = fc.predict(FRAME.assign(timestamp=pd.date_range("2024-01-01", periods=6)), horizon=2)
    np.testing.assert_array_equal(out[["prey", "pred"]].to_numpy(), plain[["prey", "pred"]].to_numpy())


def test_evaluate_and_run_study_mistakes(tmp_path):
    from flopcast import evaluate, run_study

    with pytest.raises(BadType, match="model must be a string or None, got 123"):
        evaluate(model=123)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FlopcastError, match="afile: is a file; a directory is expected"):
        run_study(one_stage_plan(), tmp_path / "afile")
    assert (tmp_path / "afile").read_text() == "x"
    plan = {
        **one_stage_plan(), "stages": [{"name": "final", "kind": "eval"}]}
    first = run_study(plan, tmp_path / "s", progress=False)
    again = run_study(plan, tmp_path / "s", progress=False, restart="final")  # one stage name, not five letters
    assert list(first.stages) == list(again.stages) == ["final"]
    assert len(list((tmp_path / "s" / "archive").iterdir())) == 1
    assert Ledger(tmp_path / "s" / "ledger.db").used() == 2 * first.stages["final"].test.score(64).flops
