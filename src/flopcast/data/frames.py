"""Series in, forecast tables out: what :meth:`flopcast.Forecaster.predict`, ``flopcast forecast`` and every CSV
reader accept and return. No torch.

Inputs, as forecasting libraries take them (Chronos-2's ``predict_df``, statsforecast's ``unique_id, ds, y``):

* an array ``(T, V)`` (or ``(T,)``): one series; an array ``(N, T, V)`` or a list of ``(T_i, V)`` arrays: several;
* a pandas DataFrame in long format: an ``id_column`` (optional: one series without it), a ``timestamp_column``
  (optional: row order without it), and one column per variable (``target_columns``, default every other
  numeric column; in the ``unique_id, ds, y`` layout, ``y``). Unnamed, the id and time columns are the first
  named (any case) as in :data:`ID_NAMES` / :data:`TIME_NAMES`. Series may have different lengths; rows are
  sorted by timestamp within each series; text dates are read as dates.

A missing value (NaN, an empty cell) is reported, or filled when asked (:mod:`flopcast.data.gaps`).

The output is a long DataFrame with one row per series and future step: the id, the timestamp (continued on the
calendar, :mod:`flopcast.data.calendar`), the point forecast per variable, and ``<variable>_q<level>`` per
quantile when forecasts are sampled.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..checks import check_arg
from ..errors import DataError
from .calendar import future_timestamps
from .gaps import check_fill, fill_gaps

ID_NAMES = ("unique_id", "id", "item_id", "series", "series_id")  # what Nixtla, Chronos and GluonTS call the id
TIME_NAMES = ("ds", "timestamp", "time", "date", "datetime", "t", "year", "period")
NIXTLA_TARGET = "y"  # the value column of the unique_id, ds, y layout


@dataclass
class SeriesBatch:
    ids: list                         # one id per series
    values: list[np.ndarray]          # (T_i, V) float64
    timestamps: list[np.ndarray | None]  # (T_i,) per series (numbers or datetime64), or None: step indices
    variables: tuple[str, ...]
    id_column: str = "id"
    timestamp_column: str = "timestamp"
    rows: list[list[Any]] | None = None  # each series' row labels (file lines, DataFrame index), for messages
    id_found: bool = False            # the ids come from a column (else: positions)
    timestamp_found: bool = False     # the timestamps come from a column


def series_from(data: Any, id_column: str | None = None, timestamp_column: str | None = None,
                target_columns: list[str] | None = None, fill: str | None = None, where: str = "") -> SeriesBatch:
    """Normalise ``data`` (see the module doc) into series; one clear error naming the series at fault. A column
    named (``id_column``, ``timestamp_column``) must exist; unnamed, a column called as in :data:`ID_NAMES` /
    :data:`TIME_NAMES` is taken when there is one (``""``: none). Missing values are filled by ``fill`` or
    refused; ``where`` prefixes messages (a file name)."""
    check_arg("id_column", id_column, str)
    check_arg("timestamp_column", timestamp_column, str)
    check_fill(fill)
    if _is_frame(data):
        batch = _from_frame(data, id_column, timestamp_column, target_columns, where)
    else:
        arrays = _arrays(data)
        V = arrays[0].shape[1]
        if any(a.shape[1] != V for a in arrays):
            raise DataError(f"series have different numbers of variables: {sorted({a.shape[1] for a in arrays})}")
        names = tuple(target_columns) if target_columns else tuple(f"x{j}" for j in range(V))
        if len(names) != V:
            raise DataError(f"{len(names)} target_columns for {V} variables")
        batch = SeriesBatch(list(range(len(arrays))), arrays, [None] * len(arrays), names, id_column or "id",
                            timestamp_column or "timestamp")
    for i, v in zip(batch.ids, batch.values):
        if len(v) == 0:
            raise DataError(f"{where}series {i!r} has no steps")
        if np.isinf(v).any():
            raise DataError(f"{where}series {i!r} has infinite values")
    rows = batch.rows or [list(range(len(v))) for v in batch.values]
    batch.values = fill_gaps(batch.values, batch.ids, batch.variables, rows, fill, where)
    return batch


def _is_frame(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns")


def _arrays(data: Any) -> list[np.ndarray]:
    if isinstance(data, np.ndarray) and data.ndim == 3:
        data = list(data)
    elif not isinstance(data, (list, tuple)):
        data = [data]
    if not data:
        raise DataError("no series to forecast")
    out = []
    for i, a in enumerate(data):
        try:
            a = np.asarray(a, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"series {i} is not numeric") from None
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise DataError(f"series {i} has shape {a.shape}: expected (T, V) or (T,)")
        out.append(a)
    return out


def pick_column(cols: list[Any], name: str | None, known: tuple[str, ...], what: str, where: str = "") -> Any:
    """The column named ``name`` (which must exist; ``""``: none), else the first known name in any case."""
    if name == "":
        return None
    if name is not None:
        if name not in cols:
            raise DataError(f"{where}{what}={name!r} is not a column (columns: {', '.join(map(str, cols))})")
        return name
    lower = {str(c).lower(): c for c in reversed(cols)}
    return next((lower[k] for k in known if k in lower), None)


def _targets(df: pd.DataFrame, id_column: Any, ts_column: Any, target_columns: Any, where: str) -> list[Any]:
    """The value columns: those named, else ``y`` in the ``unique_id, ds, y`` layout, else every numeric one."""
    cols = list(df.columns)
    if isinstance(target_columns, str):
        target_columns = [target_columns]
    if target_columns is not None and not (isinstance(target_columns, (list, tuple))
                                           and all(isinstance(c, str) for c in target_columns)):
        raise DataError(f"target_columns must be column names (a list of strings), got {target_columns!r}")
    if target_columns is None:
        rest = [c for c in cols if c not in (id_column, ts_column)]
        numeric = [c for c in rest if _numeric(df[c]) or _mostly_numbers(df[c])]
        named = {str(id_column).lower(), str(ts_column).lower()}
        nixtla = NIXTLA_TARGET in cols and bool(named & {"unique_id", "ds"})  # statsforecast's layout: y alone
        target_columns = [NIXTLA_TARGET] if nixtla else numeric
        left = [str(c) for c in rest if c not in target_columns]
        if left:
            what = ("are not forecast in the unique_id, ds, y layout" if nixtla
                    else "hold text, not numbers: not variables")
            warnings.warn(f"{where}column(s) {', '.join(left)} {what} (name the variables with target_columns=, CLI "
                          "--value-columns)", stacklevel=4)
    missing = [c for c in target_columns if c not in cols]
    if missing or not target_columns:
        raise DataError(f"{where}no value column(s) {missing or ''} (columns: {', '.join(map(str, cols))}); name "
                        "them with target_columns= (CLI --value-columns)")
    return list(target_columns)


def _from_frame(df: pd.DataFrame, id_column: str | None, timestamp_column: str | None,
                target_columns: list[str] | None, where: str) -> SeriesBatch:
    cols = list(df.columns)
    if len(df) == 0:
        raise DataError(f"{where}the table has no rows (columns: {', '.join(map(str, cols))})")
    idc = pick_column(cols, id_column, ID_NAMES, "id_column", where)
    tsc = pick_column(cols, timestamp_column, TIME_NAMES, "timestamp_column", where)
    targets = _targets(df, idc, tsc, target_columns, where)
    groups = df.groupby(idc, sort=False) if idc is not None else [(0, df)]
    ids, values, stamps, rows = [], [], [], []
    for key, g in groups:
        if tsc is not None:
            g = g.assign(**{tsc: _times(g[tsc], key, where)}).sort_values(tsc, kind="stable")
            ts = g[tsc].to_numpy()
            if len(ts) > 1 and not np.all(ts[1:] > ts[:-1]):
                dup = ts[1:][~(ts[1:] > ts[:-1])][0]
                raise DataError(f"{where}series {key!r} has time {dup} twice in {tsc!r}; one row per time step")
            stamps.append(ts)
        else:
            stamps.append(None)
        values.append(_values(g, targets, key, where))
        ids.append(key)
        rows.append(list(g.index))
    return SeriesBatch(ids, values, stamps, tuple(str(t) for t in targets), str(idc or "id"),
                       str(tsc or "timestamp"), rows, idc is not None, tsc is not None)


def _values(g: pd.DataFrame, targets: list[Any], key: Any, where: str) -> np.ndarray:
    """The value columns as floats (empty text is missing); text that is no number is one line naming it."""
    part = _blank_as_missing(g[targets])
    out = part.apply(pd.to_numeric, errors="coerce")
    bad = out.isna() & part.notna()
    if bad.to_numpy().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        raise DataError(f"{where}series {key!r}, row {g.index[r]}: {targets[c]!r} is {part.iat[r, c]!r}, not a "
                        "number")
    return out.to_numpy(dtype=np.float64)


def _blank_as_missing(table: Any) -> Any:
    """A Series or DataFrame with empty or all-space text cells as NaN (an empty CSV cell is a missing value)."""
    return table.replace(r"^\s*$", np.nan, regex=True)


def _numeric(col: pd.Series) -> bool:
    """A column of numbers (any of pandas' numeric dtypes, nullable ones included; not booleans)."""
    return bool(pd.api.types.is_numeric_dtype(col.dtype)) and not pd.api.types.is_bool_dtype(col.dtype)


def _mostly_numbers(col: pd.Series) -> bool:
    """A text column (pandas' string dtypes, or objects) of which at least half the values (empty ones aside) read
    as numbers: a column of numbers with a typo in it is a variable (the typo is then named), not ignored."""
    if not (pd.api.types.is_string_dtype(col.dtype) or col.dtype == object):
        return False
    text = _blank_as_missing(col).dropna()
    return len(text) > 0 and float(pd.to_numeric(text, errors="coerce").notna().mean()) >= 0.5


def _times(col: pd.Series, key: Any, where: str) -> pd.Series:
    """Timestamps as numbers or datetimes: text (``"2024-01-05"``) is parsed as dates, before any work."""
    if col.isna().any() or (col.astype(str).str.strip() == "").any():
        raise DataError(f"{where}series {key!r} has a row without a time in {col.name!r}")
    if _numeric(col) or pd.api.types.is_datetime64_any_dtype(col.dtype):
        return col
    try:
        return pd.to_numeric(col)  # numbers held as objects or text: still numbers
    except (TypeError, ValueError):
        pass
    try:
        return pd.to_datetime(col, format="ISO8601")
    except (TypeError, ValueError):
        try:
            return pd.to_datetime(col, format="mixed")
        except (TypeError, ValueError):
            raise DataError(f"{where}series {key!r}: times such as {col.iloc[0]!r} are neither numbers nor "
                            "dates") from None


def to_frame(batch: SeriesBatch, point: np.ndarray, quantiles: dict[float, np.ndarray]) -> pd.DataFrame:
    """The forecast table (see the module doc) from (N, H, V) point forecasts and quantiles."""
    H = point.shape[1]
    rows: dict[str, list[Any]] = {batch.id_column: [], batch.timestamp_column: []}
    for key, v, ts in zip(batch.ids, batch.values, batch.timestamps):
        rows[batch.id_column] += [key] * H
        rows[batch.timestamp_column] += list(future_timestamps(ts, len(v), H))
    for j, name in enumerate(batch.variables):
        rows[name] = point[:, :, j].reshape(-1).tolist()
    for q, arr in quantiles.items():
        for j, name in enumerate(batch.variables):
            rows[f"{name}_q{q:g}"] = arr[:, :, j].reshape(-1).tolist()
    return pd.DataFrame(rows)
