"""LLMTime codec: numeric arrays <-> text, with explicit scaling state. No torch.

Format (defaults): values divided by ``alpha``, rounded to 2 decimals, ``,`` between variables and
``;`` after every timestep::

    0.25,1.50;0.27,1.47;

There is no ceiling: a scaled value of 12.345 encodes as ``12.35`` and decodes back. With
``drop_decimal_point`` the point is removed and the fixed number of decimals is implied
(``1.50`` -> ``150``, ``0.05`` -> ``5``), as in LLMTime.

Decoding well-formed text is exact (``decode(encode(x)) == round(x / alpha, decimals) * alpha``).
Decoding model output is robust: stray characters are dropped, a step with a missing or
malformed value gets NaN there, and an unterminated trailing step is reported as partial.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..config import CodecConfig, from_dict, to_dict
from ..errors import DataError, FlopcastError


@dataclass(frozen=True)
class DecodeResult:
    """Result of decoding text.

    values: (n_steps, V) in original units (NaN where a value could not be parsed).
    n_steps: number of ``;``-terminated steps seen (rows in ``values``).
    n_valid: steps whose V values all parsed.
    partial: True if text after the last separator was an unterminated (dropped) step.
    n_stray: characters outside the alphabet that were ignored.
    """

    values: np.ndarray
    n_steps: int
    n_valid: int
    partial: bool
    n_stray: int

    @property
    def ok(self) -> bool:
        return self.n_steps == self.n_valid and self.n_stray == 0


def fit_alpha(train: np.ndarray | list[np.ndarray], config: CodecConfig) -> float:
    """Global scale from training data: the ``percentile``-th percentile maps to ``target``."""
    if config.scale_mode == "none":
        return 1.0
    arrays = train if isinstance(train, list) else [train]
    flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])
    return _alpha_from(flat, config)


def _alpha_from(values: np.ndarray, config: CodecConfig) -> float:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise DataError("cannot fit a scale: no finite values")
    p = float(np.percentile(finite, config.percentile))
    return p / config.target if p > 0 else 1.0


class LLMTimeCodec:
    """Encoder/decoder with explicit scale state.

    ``alpha`` is the global divisor (``scale_mode='global'``); with ``'per_series'`` each series
    gets its own alpha computed from the series (for forecasting: from the context only) via
    :meth:`series_alpha`; with ``'none'`` alpha is 1.
    """

    def __init__(self, config: CodecConfig | None = None, alpha: float | None = None):
        self.config = config or CodecConfig()
        if self.config.scale_mode == "none":
            alpha = 1.0 if alpha is None else alpha
        if alpha is not None and not (np.isfinite(alpha) and alpha > 0):
            raise FlopcastError(f"alpha must be a finite positive number, got {alpha}")
        self.alpha = alpha
        c = self.config
        num = r"\d+" if c.drop_decimal_point else (r"\d+(?:\.\d{%d})" % c.decimals if c.decimals else r"\d+")
        step = num + "(?:" + re.escape(c.var_sep) + num + ")*" + re.escape(c.step_sep)
        self._wellformed = re.compile("(?:" + step + ")*")
        self._alphabet = set("0123456789" + c.var_sep + c.step_sep + ("" if c.drop_decimal_point else "."))

    # ------------------------------------------------------------------ scale
    @classmethod
    def fit(cls, config: CodecConfig, train: np.ndarray | list[np.ndarray]) -> "LLMTimeCodec":
        """A codec whose global alpha comes from the training split."""
        alpha = fit_alpha(train, config) if config.scale_mode == "global" else None
        return cls(config, alpha)

    def state(self) -> dict:
        """Config plus alpha as plain data (saved with adapters and results)."""
        return {**to_dict(self.config), "alpha": self.alpha}

    @classmethod
    def from_state(cls, state: dict) -> "LLMTimeCodec":
        d = dict(state)
        alpha = d.pop("alpha", None)
        return cls(from_dict(CodecConfig, d), alpha)

    def series_alpha(self, context: np.ndarray) -> float:
        """The alpha used for one series, given (only) its context values."""
        if self.config.scale_mode == "per_series":
            return _alpha_from(np.asarray(context, dtype=np.float64).ravel(), self.config)
        if self.alpha is None:
            raise FlopcastError("global codec has no alpha yet: use LLMTimeCodec.fit(config, train) or pass alpha")
        return self.alpha

    # ------------------------------------------------------------------ encode
    def encode(self, series: np.ndarray, alpha: float | None = None) -> str:
        """Encode a (T, V) or (T,) array. ``alpha`` defaults to :meth:`series_alpha`."""
        x = np.asarray(series, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise DataError(f"encode expects a (T, V) array, got shape {x.shape}")
        if x.size and not np.all(np.isfinite(x)):
            raise DataError("cannot encode NaN or infinite values")
        if x.size and x.min() < 0:
            raise DataError(f"LLMTime encoding needs non-negative values, got min {x.min():.6g}")
        a = self.series_alpha(x) if alpha is None else alpha
        return self.encode_scaled(x / a)

    def encode_scaled(self, scaled: np.ndarray) -> str:
        """Encode values that are already divided by alpha."""
        c = self.config
        x = np.asarray(scaled, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if c.drop_decimal_point:
            ints = np.rint(x * 10**c.decimals).astype(np.int64)
            rows = [c.var_sep.join(str(int(v)) for v in r) for r in ints]
        else:
            fmt = "{:.%df}" % c.decimals
            # add 0.0 so -0.0 prints as 0.00
            rows = [c.var_sep.join(fmt.format(v + 0.0) for v in r) for r in np.round(x, c.decimals)]
        return "".join(r + c.step_sep for r in rows)

    # ------------------------------------------------------------------ decode
    def decode(self, text: str, n_vars: int, alpha: float | None = None) -> DecodeResult:
        """Decode text to values in original units (multiplied by alpha)."""
        a = (self.alpha if self.alpha is not None else 1.0) if alpha is None else alpha
        res = self.decode_scaled(text, n_vars)
        return DecodeResult(res.values * a, res.n_steps, res.n_valid, res.partial, res.n_stray)

    def decode_scaled(self, text: str, n_vars: int) -> DecodeResult:
        """Decode text to scaled values. Never raises on malformed text."""
        if n_vars < 1:
            raise FlopcastError(f"n_vars must be >= 1, got {n_vars}")
        c = self.config
        if self._wellformed.fullmatch(text):
            return self._decode_fast(text, n_vars)
        clean = "".join(ch for ch in text if ch in self._alphabet)
        n_stray = sum(1 for ch in text if not ch.isspace()) - len(clean)
        chunks = clean.split(c.step_sep)
        tail = chunks.pop()  # text after the last step separator (may be empty)
        rows = np.full((len(chunks), n_vars), np.nan)
        n_valid = 0
        for i, chunk in enumerate(chunks):
            fields = chunk.split(c.var_sep)
            good = True
            if len(fields) != n_vars:
                good = False
            for j, f in enumerate(fields[:n_vars]):
                v = self._parse_number(f)
                if v is None:
                    good = False
                else:
                    rows[i, j] = v
            n_valid += good
        return DecodeResult(rows, len(chunks), n_valid, bool(tail), max(n_stray, 0))

    def _decode_fast(self, text: str, n_vars: int) -> DecodeResult:
        c = self.config
        steps = text.split(c.step_sep)[:-1]
        rows = np.full((len(steps), n_vars), np.nan)
        n_valid = 0
        for i, s in enumerate(steps):
            fields = s.split(c.var_sep)
            vals = [float(f) for f in fields[:n_vars]]
            if c.drop_decimal_point:
                vals = [v / 10**c.decimals for v in vals]
            rows[i, : len(vals)] = vals
            n_valid += len(fields) == n_vars
        return DecodeResult(rows, len(steps), n_valid, False, 0)

    def _parse_number(self, s: str) -> float | None:
        c = self.config
        if not s:
            return None
        if c.drop_decimal_point:
            return int(s) / 10**c.decimals if s.isdigit() else None
        if s.count(".") > 1 or s.startswith(".") or s.endswith("."):
            return None
        return float(s) if s.replace(".", "", 1).isdigit() else None

