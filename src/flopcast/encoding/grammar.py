"""A finite-state grammar of LLMTime output, used for constrained decoding. No torch.

Each generated character advances a per-series :class:`StepState`; :meth:`LLMTimeGrammar.allowed`
says which characters may come next, so the generated text is always well formed: every value has
an optional ``-`` (only in a ``signed`` grammar), 1..``max_int_digits`` integer digits and exactly ``decimals``
decimals, ``V`` values per step, and generation ends after the requested number of complete steps.

:func:`grammar_for` derives both open choices from the contexts: a sign only where some context has a negative
value (so forecasts of non-negative data are decoded over exactly the characters they always were), and one
integer digit more than the contexts' largest value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import CodecConfig

DIGITS = frozenset("0123456789")
EOS = "<eos>"  # pseudo-character: end of sequence
MIN_INT_DIGITS = 3


def longest_int_part(texts: Iterable[str], config: CodecConfig) -> int:
    """The most integer digits of any value written in ``texts`` (LLMTime text, possibly cut mid-step)."""
    seps = "[" + re.escape(config.var_sep + config.step_sep) + "]"
    longest = 0
    for text in texts:
        for field in re.split(seps, text):
            digits = field.strip().lstrip("-")
            if config.drop_decimal_point:
                n = len(digits) - config.decimals
            else:
                n = len(digits.split(".")[0])
            longest = max(longest, n)
    return longest


def int_digits_for(texts: Iterable[str], config: CodecConfig, minimum: int = MIN_INT_DIGITS) -> int:
    """Integer digits the decoder allows after contexts ``texts``: one more than the largest value in
    them has (room for ten times that value), and at least ``minimum``. So a forecast is never cut at a
    ceiling the data already reaches; one that reaches the cap is reported (``ForecastResult.capped``)."""
    return max(minimum, longest_int_part(texts, config) + 1)


def grammar_for(texts: list[str], config: CodecConfig, n_vars: int, max_int_digits: int | None = None,
                signed: bool | None = None) -> "LLMTimeGrammar":
    """The decoding grammar after contexts ``texts``: signed when any of them holds a negative value, with the
    integer digits of :func:`int_digits_for` (unless given)."""
    return LLMTimeGrammar(config, n_vars, max_int_digits or int_digits_for(texts, config),
                          any("-" in t for t in texts) if signed is None else signed)


@dataclass
class StepState:
    var: int = 0          # index of the variable being written
    int_digits: int = 0   # digits before the point (or all digits without a point)
    frac_digits: int = -1  # -1: no point yet; else digits after the point
    negative: bool = False  # a '-' opens the value being written
    steps: int = 0        # completed steps
    target: int = 0       # steps to generate
    broken: bool = False  # an illegal character was seen (only possible in unconstrained text)

    @property
    def done(self) -> bool:
        return self.steps >= self.target or self.broken


class LLMTimeGrammar:
    def __init__(self, config: CodecConfig, n_vars: int, max_int_digits: int = 3, signed: bool = False):
        self.c = config
        self.n_vars = n_vars
        self.max_int = max_int_digits
        self.signed = signed
        self.point = not config.drop_decimal_point and config.decimals > 0

    def start(self, target_steps: int, prefix: str = "") -> StepState:
        """State after ``prefix`` (text since the last complete step; '' for a clean boundary)."""
        st = StepState(target=target_steps)
        for ch in prefix:
            self.advance(st, ch)
        st.steps = 0  # the prefix belongs to the context, not to the forecast
        return st

    def allowed(self, st: StepState) -> frozenset[str]:
        c = self.c
        if st.done:
            return frozenset({EOS})
        sep = c.var_sep if st.var < self.n_vars - 1 else c.step_sep
        if st.frac_digits >= 0:  # after the point
            return DIGITS if st.frac_digits < c.decimals else frozenset({sep})
        if st.int_digits == 0:
            return (DIGITS | {"-"}) if self.signed and not st.negative else DIGITS
        if self.point:
            return (DIGITS | {"."}) if st.int_digits < self.max_int else frozenset({"."})
        limit = self.max_int + (c.decimals if c.drop_decimal_point else 0)
        return (DIGITS | {sep}) if st.int_digits < limit else frozenset({sep})

    def advance(self, st: StepState, ch: str) -> None:
        """Consume one character (anything not allowed marks the state broken)."""
        c = self.c
        if st.done or ch not in self.allowed(st):
            st.broken = st.broken or not st.done
            return
        if ch in DIGITS:
            if st.frac_digits >= 0:
                st.frac_digits += 1
            else:
                st.int_digits += 1
        elif ch == "-":
            st.negative = True
        elif ch == ".":
            st.frac_digits = 0
        elif ch == c.var_sep:
            st.var, st.int_digits, st.frac_digits, st.negative = st.var + 1, 0, -1, False
        elif ch == c.step_sep:
            st.var, st.int_digits, st.frac_digits, st.negative, st.steps = 0, 0, -1, False, st.steps + 1

    def max_tokens(self, steps: int) -> int:
        """Upper bound on characters needed for ``steps`` steps."""
        per_value = self.max_int + (1 + self.c.decimals if self.point else self.c.decimals) + 1 + self.signed
        return steps * self.n_vars * per_value + per_value * self.n_vars  # + a partial first step

    @property
    def alphabet(self) -> frozenset[str]:
        return (DIGITS | {self.c.var_sep, self.c.step_sep} | ({"."} if self.point else set())
                | ({"-"} if self.signed else set()))
