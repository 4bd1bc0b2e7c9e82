"""Series in, forecast tables out: what :meth:`flopcast.Forecaster.predict` accepts and returns. No torch.

Inputs, as forecasting libraries take them (Chronos-2's ``predict_df``, GluonTS's ``PandasDataset``):

* an array ``(T, V)`` (or ``(T,)``): one series; an array ``(N, T, V)`` or a list of ``(T_i, V)`` arrays: several;
* a pandas DataFrame in long format: an ``id_column`` (optional: one series without it), a ``timestamp_column``
  (optional: row order without it), and one column per variable (``target_columns``, default every other
  numeric column). Series may have different lengths; rows are sorted by timestamp within each series.

The output is a long DataFrame with one row per series and future step: the id, the timestamp (continued at
the series' own spacing: its last two timestamps; the step index when there are none), the point forecast per
variable, and ``<variable>_q<level>`` per quantile when forecasts are sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..checks import check_arg
from ..errors import DataError

ID_NAMES = ("id", "unique_id", "item_id", "series")      # what Nixtla, Chronos and GluonTS call the series' id
TIME_NAMES = ("timestamp", "ds", "time", "date")
MIN_STEPS = 2  # a context needs two steps: the spacing of its timestamps, and something to continue


@dataclass
class SeriesBatch:
    ids: list                         # one id per series
    values: list[np.ndarray]          # (T_i, V) float64
    timestamps: list[np.ndarray | None]  # (T_i,) per series, or None: step indices
    variables: tuple[str, ...]
    id_column: str = "id"
    timestamp_column: str = "timestamp"


def series_from(data: Any, id_column: str | None = None, timestamp_column: str | None = None,
                target_columns: list[str] | None = None) -> SeriesBatch:
    """Normalise ``data`` (see the module doc) into series; one clear error naming the series at fault. A column
    named (``id_column``, ``timestamp_column``) must exist; unnamed, a column called as in :data:`ID_NAMES` /
    :data:`TIME_NAMES` is taken when there is one."""
    check_arg("id_column", id_column, str)
    check_arg("timestamp_column", timestamp_column, str)
    if _is_frame(data):
        batch = _from_frame(data, id_column, timestamp_column, target_columns)
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
        if len(v) < MIN_STEPS:
            raise DataError(f"series {i!r} has {len(v)} step(s); forecasting needs at least {MIN_STEPS}")
        if not np.all(np.isfinite(v)):
            raise DataError(f"series {i!r} has missing (NaN) or infinite values")
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


def _from_frame(df: pd.DataFrame, id_column: str | None, timestamp_column: str | None,
                target_columns: list[str] | None) -> SeriesBatch:
    cols = list(df.columns)
    if len(df) == 0:
        raise DataError(f"the DataFrame has no rows (columns: {', '.join(map(str, cols))})")
    for what, name in (("id_column", id_column), ("timestamp_column", timestamp_column)):
        if name is not None and name not in cols:
            raise DataError(f"{what}={name!r} is not a column (columns: {', '.join(map(str, cols))})")
    id_column = id_column or next((c for c in ID_NAMES if c in cols), "id")
    timestamp_column = timestamp_column or next((c for c in TIME_NAMES if c in cols), "timestamp")
    has_id, has_ts = id_column in cols, timestamp_column in cols
    if isinstance(target_columns, str):
        target_columns = [target_columns]
    if target_columns is not None and not (isinstance(target_columns, (list, tuple))
                                           and all(isinstance(c, str) for c in target_columns)):
        raise DataError(f"target_columns must be column names (a list of strings), got {target_columns!r}")
    if target_columns is None:
        target_columns = [c for c in cols if c not in (id_column, timestamp_column)
                          and (_numeric(df[c]) or _numbers_as_text(df[c]))]
    missing = [c for c in target_columns if c not in cols]
    if missing or not target_columns:
        raise DataError(f"DataFrame has no target column(s) {missing or ''} (columns: {', '.join(map(str, cols))}); "
                        f"name them with target_columns=")
    groups = df.groupby(id_column, sort=False) if has_id else [(0, df)]
    ids, values, stamps = [], [], []
    for key, g in groups:
        if has_ts:
            g = g.assign(**{timestamp_column: _times(g[timestamp_column], key)}).sort_values(timestamp_column,
                                                                                            kind="stable")
            ts = g[timestamp_column].to_numpy()
            if len(ts) > 1 and not np.all(ts[1:] > ts[:-1]):
                raise DataError(f"series {key!r} has repeated timestamps in {timestamp_column!r}")
            stamps.append(ts)
        else:
            stamps.append(None)
        try:
            values.append(g[list(target_columns)].apply(pd.to_numeric).to_numpy(dtype=np.float64))
        except (TypeError, ValueError):
            raise DataError(f"series {key!r}: target columns {list(target_columns)} are not all numeric") from None
        ids.append(key)
    return SeriesBatch(ids, values, stamps, tuple(target_columns), id_column, timestamp_column)


def _numeric(col: pd.Series) -> bool:
    """A column of numbers (any of pandas' numeric dtypes, nullable ones included; not booleans)."""
    return bool(pd.api.types.is_numeric_dtype(col.dtype)) and not pd.api.types.is_bool_dtype(col.dtype)


def _numbers_as_text(col: pd.Series) -> bool:
    """A text column (pandas' string dtypes, or objects) whose every value reads as a number."""
    if not (pd.api.types.is_string_dtype(col.dtype) or col.dtype == object):
        return False
    return bool(pd.to_numeric(col, errors="coerce").notna().all())


def _times(col: pd.Series, key: Any) -> pd.Series:
    """Timestamps as numbers or datetimes: text (``"2024-01-05"``) is parsed as dates, before any work."""
    if _numeric(col) or pd.api.types.is_datetime64_any_dtype(col.dtype):
        return col
    try:
        return pd.to_numeric(col)  # numbers held as objects or text: still numbers
    except (TypeError, ValueError):
        pass
    try:
        return pd.to_datetime(col)
    except (TypeError, ValueError):
        raise DataError(f"series {key!r}: timestamps such as {col.iloc[0]!r} are neither numbers nor dates") from None


def future_timestamps(ts: np.ndarray | None, length: int, horizon: int) -> np.ndarray:
    """The next ``horizon`` timestamps: the last one plus multiples of the last spacing; step indices without any."""
    if ts is None:
        return np.arange(length, length + horizon)
    step = ts[-1] - ts[-2]
    return np.array([ts[-1] + step * (k + 1) for k in range(horizon)])


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
