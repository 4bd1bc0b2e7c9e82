"""LLMTime codec: numeric arrays <-> text, with explicit scaling state. No torch.

Format (defaults): values mapped by their variable's scale (``(x - beta) / alpha``, see
:mod:`flopcast.encoding.scaling`), rounded to 2 decimals, a ``-`` before negative ones, ``,`` between variables
and ``;`` after every timestep::

    0.25,-1.50;0.27,-1.47;

There is no ceiling: a scaled value of 12.345 encodes as ``12.35`` and decodes back. With
``drop_decimal_point`` the point is removed and the fixed number of decimals is implied
(``1.50`` -> ``150``, ``0.05`` -> ``5``), as in LLMTime.

Decoding well-formed text is exact (``decode(encode(x)) == invert(round(apply(x), decimals))``).
Decoding model output is robust: stray characters are dropped, a step with a missing or
malformed value gets NaN there, and an unterminated trailing step is reported as partial.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np

from ..config import CodecConfig, from_dict, to_dict
from ..errors import DataError, FlopcastError
from .scaling import Scale, collapse_warning, fit_scale


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


class LLMTimeCodec:
    """Encoder/decoder with explicit scale state.

    ``scale`` is the :class:`~flopcast.encoding.scaling.Scale` fitted on the training split
    (``scale_mode='global'``); with ``'per_series'`` each series gets its own, computed from the series (for
    forecasting: from the context only) by :meth:`series_scale`; with ``'none'`` it is the identity.
    """

    def __init__(self, config: CodecConfig | None = None, scale: Scale | None = None):
        self.config = config or CodecConfig()
        if self.config.scale_mode == "none" and scale is None:
            scale = Scale.identity()
        self.scale = scale
        c = self.config
        num = r"-?\d+" if c.drop_decimal_point else (r"-?\d+(?:\.\d{%d})" % c.decimals if c.decimals else r"-?\d+")
        step = num + "(?:" + re.escape(c.var_sep) + num + ")*" + re.escape(c.step_sep)
        self._wellformed = re.compile("(?:" + step + ")*")
        self._alphabet = set("-0123456789" + c.var_sep + c.step_sep + ("" if c.drop_decimal_point else "."))

    # ------------------------------------------------------------------ scale
    @classmethod
    def fit(cls, config: CodecConfig, train: np.ndarray | list[np.ndarray]) -> "LLMTimeCodec":
        """A codec whose global scale comes from the training split (none is fitted for the other modes); a warning
        names the variables that scale writes with fewer than two significant digits."""
        if config.scale_mode != "global":
            return cls(config)
        scale = fit_scale(train, config)
        series = train if isinstance(train, list) else [train]
        lost = collapse_warning(series, [scale] * len(series), config.decimals)
        if lost:
            warnings.warn(lost, stacklevel=2)
        return cls(config, scale)

    def state(self) -> dict:
        """Config plus the fitted scale as plain data (saved with adapters and results)."""
        return {**to_dict(self.config), **(self.scale.state() if self.scale is not None else {})}

    @classmethod
    def from_state(cls, state: dict) -> "LLMTimeCodec":
        """The codec of :meth:`state`. A state without ``per_variable`` predates it: one pooled alpha, no offset."""
        d = dict(state)
        alpha, beta = d.pop("alpha", None), d.pop("beta", 0.0)
        d.setdefault("per_variable", False)
        return cls(from_dict(CodecConfig, d), Scale.from_state(alpha, beta) if alpha is not None else None)

    def series_scale(self, context: np.ndarray) -> Scale:
        """The scale used for one series, given (only) its context values."""
        if self.config.scale_mode == "per_series":
            return fit_scale(np.asarray(context, dtype=np.float64), self.config)
        if self.scale is None:
            raise FlopcastError("global codec has no scale yet: use LLMTimeCodec.fit(config, train) or pass scale")
        return self.scale

    # ------------------------------------------------------------------ encode
    def encode(self, series: np.ndarray, scale: Scale | None = None) -> str:
        """Encode a (T, V) or (T,) array. ``scale`` defaults to :meth:`series_scale`."""
        x = np.asarray(series, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise DataError(f"encode expects a (T, V) array, got shape {x.shape}")
        if x.size and not np.all(np.isfinite(x)):
            raise DataError("cannot encode NaN or infinite values")
        return self.encode_scaled((self.series_scale(x) if scale is None else scale).apply(x))

    def encode_scaled(self, scaled: np.ndarray) -> str:
        """Encode values that are already scaled (a ``-`` before negative ones)."""
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
    def decode(self, text: str, n_vars: int, scale: Scale | None = None) -> DecodeResult:
        """Decode text to values in original units (``scale``, default the codec's, inverted)."""
        sc = scale or self.scale or Scale.identity()
        res = self.decode_scaled(text, n_vars)
        return DecodeResult(sc.invert(res.values), res.n_steps, res.n_valid, res.partial, res.n_stray)

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
        """One value, or None: a sign anywhere but first, a second sign, a point without digits on both sides."""
        c = self.config
        sign = -1.0 if s.startswith("-") else 1.0
        s = s[1:] if s.startswith("-") else s
        if not s:
            return None
        if c.drop_decimal_point:
            return sign * int(s) / 10**c.decimals if s.isdigit() else None
        if s.count(".") > 1 or s.startswith(".") or s.endswith("."):
            return None
        return sign * float(s) if s.replace(".", "", 1).isdigit() else None

