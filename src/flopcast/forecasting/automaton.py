"""The LLMTime grammar as tensors, so a constrained decode step never returns to Python.

:class:`TokenAutomaton` compiles a :class:`~flopcast.encoding.grammar.LLMTimeGrammar` (the specification, in
Python) into tables over its states within one step -- (variable, integer digits, decimal digits, sign) -- and
its alphabet (digits, point, separators, EOS), each character one token of the tokenizer:

* ``allowed[state, char]`` -- which characters may come next;
* ``next_state[state, char]`` and ``ends_step[state, char]`` -- where a character leads.

A batch keeps one state and one completed-step count per row on the device; a decode step is
gather -> mask -> argmax (or sample) -> gather. Rows whose steps are complete may only emit EOS, exactly
as in the Python grammar, so greedy decoding picks the same tokens: the alphabet's columns are kept in
token-id order, and argmax over them breaks ties as argmax over the whole masked vocabulary does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from ..encoding.grammar import EOS, LLMTimeGrammar, StepState
from ..errors import FlopcastError

_UNBOUNDED = 1 << 30  # a target no row reaches while the tables are enumerated


@dataclass(frozen=True)
class Sampling:
    """How the next character is chosen among those the grammar allows: the most likely (``greedy``), or drawn
    from the softmax at ``temperature``, within the nucleus of probability ``top_p``, with ``generator`` (seeded, on
    the logits' device: drawing there needs no copy to the host, and a seed gives the same samples on a device)."""

    greedy: bool = True
    temperature: float = 1.0
    generator: torch.Generator | None = None
    top_p: float = 1.0


def _key(st: StepState) -> tuple[int, int, int, bool]:
    return st.var, st.int_digits, st.frac_digits, st.negative


class TokenAutomaton:
    def __init__(self, grammar: LLMTimeGrammar, tokenizer: Any, device: Any = "cpu"):
        self.grammar = grammar
        ids = _char_tokens(tokenizer, grammar)
        self.chars = sorted(ids, key=lambda c: ids[c])  # token-id order (argmax ties, see the module doc)
        self.token_ids = torch.tensor([ids[c] for c in self.chars], dtype=torch.long, device=device)
        self.eos = self.chars.index(EOS)
        self.states: dict[tuple[int, int, int, bool], int] = {}
        allowed, nxt, ends = self._enumerate()
        self.allowed = torch.tensor(allowed, dtype=torch.bool, device=device)
        self.next_state = torch.tensor(nxt, dtype=torch.long, device=device)
        self.ends_step = torch.tensor(ends, dtype=torch.bool, device=device)

    def _enumerate(self) -> tuple[list[list[bool]], list[list[int]], list[list[bool]]]:
        """Breadth-first over the states reachable from a step boundary, asking the Python grammar."""
        g, C = self.grammar, len(self.chars)
        todo = [StepState(target=_UNBOUNDED)]
        self.states[_key(todo[0])] = 0
        allowed: list[list[bool]] = []
        nxt: list[list[int]] = []
        ends: list[list[bool]] = []
        while len(allowed) < len(self.states):
            st = todo[len(allowed)]
            ok = g.allowed(st)
            allowed.append([c in ok for c in self.chars])
            nxt.append([0] * C)
            ends.append([False] * C)
            for j, c in enumerate(self.chars):
                if c not in ok:
                    continue
                after = replace(st)
                g.advance(after, c)
                if _key(after) not in self.states:
                    self.states[_key(after)] = len(self.states)
                    todo.append(after)
                nxt[-1][j], ends[-1][j] = self.states[_key(after)], after.steps > st.steps
        return allowed, nxt, ends

    def start(self, targets: list[int], prefixes: list[str],
              device: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(state, steps, target) per row after each prefix (text since the row's last complete step).
        A prefix the grammar rejects leaves its row finished at once, as the Python grammar does."""
        state, target = [], []
        for t, pre in zip(targets, prefixes):
            st = self.grammar.start(t, pre)
            state.append(0 if st.broken else self.states[_key(st)])
            target.append(0 if st.broken else t)
        as_tensor = lambda v: torch.tensor(v, dtype=torch.long, device=device)  # noqa: E731
        return as_tensor(state), torch.zeros(len(state), dtype=torch.long, device=device), as_tensor(target)

    def choose(self, logits: torch.Tensor, state: torch.Tensor, done: torch.Tensor,
               sampling: Sampling | None = None) -> torch.Tensor:
        """The next character (index into ``chars``) per row from ``logits`` (B, vocab), or from logits over the
        alphabet's tokens only (B, len(chars), in ``token_ids`` order: a head restricted to them)."""
        allowed = self.allowed[state]
        allowed = torch.where(done[:, None], torch.arange(len(self.chars), device=state.device) == self.eos, allowed)
        if logits.shape[-1] != len(self.chars):
            logits = logits.index_select(-1, self.token_ids)
        sub = logits.float().masked_fill(~allowed, float("-inf"))
        sampling = sampling or Sampling()
        if sampling.greedy:
            return sub.argmax(-1)
        probs = torch.softmax(sub / sampling.temperature, -1)
        if sampling.top_p < 1:
            probs = nucleus(probs, sampling.top_p)
        return torch.multinomial(probs, 1, generator=sampling.generator).squeeze(-1)

    def advance(self, state: torch.Tensor, steps: torch.Tensor, char: torch.Tensor,
                active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New (state, steps) after each active row writes ``char``."""
        new_state = torch.where(active, self.next_state[state, char], state)
        return new_state, steps + (active & self.ends_step[state, char]).long()

    def text(self, chars: torch.Tensor) -> list[str]:
        """Rows of character indices (-1: nothing written) -> strings."""
        return ["".join(self.chars[c] for c in row if c >= 0) for row in chars.tolist()]


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` (B, C) kept on each row's smallest set of most likely characters whose total reaches ``top_p`` (the
    most likely always stays), renormalised."""
    sorted_p, order = probs.sort(-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # probability of the more likely characters
    keep_sorted = before < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


def _char_tokens(tokenizer: Any, grammar: LLMTimeGrammar) -> dict[str, int]:
    """The single token of each alphabet character, and EOS."""
    ids: dict[str, int] = {}
    for ch in sorted(grammar.alphabet):
        tok = tokenizer(ch, add_special_tokens=False).input_ids
        if len(tok) != 1 or tokenizer.decode(tok) != ch:
            raise FlopcastError(f"tokenizer has no single token for {ch!r}: constrained decoding needs one "
                                "per character")
        ids[ch] = tok[0]
    if tokenizer.eos_token_id is None:
        raise FlopcastError("tokenizer has no EOS token")
    ids[EOS] = tokenizer.eos_token_id
    return ids
