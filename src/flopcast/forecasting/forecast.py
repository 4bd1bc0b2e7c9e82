"""Batched, KV-cached, grammar-constrained forecasting with a causal LM.

Contexts are encoded with the codec and tokenized; the rows (one per series and sample) are sorted by prompt length
so padding stays small, and each batch of rows is decoded by a :class:`~flopcast.forecasting.decode.Decoder`: the
prompts are prefilled into a KV cache (logits only for the last position), then decoded token by token. The
:class:`~flopcast.encoding.grammar.LLMTimeGrammar`, compiled to tensors, masks the logits on the device so only
well-formed LLMTime can be produced, and each row stops as soon as its ``horizon`` steps are complete. The LM head
computes only the grammar's columns (:func:`~flopcast.model.heads.numeric_head`). Greedy by default; with
``n_samples > 1`` each context is sampled ``n`` times -> median point forecast and quantiles.

Values may have one more integer digit than the largest value in the prompts (at least 3, see
:func:`flopcast.encoding.grammar.int_digits_for`); forecasts that reach that cap are flagged in ``capped``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..budget.costs import batch_flops, decode_batches, model_shape
from ..config import ForecastConfig
from ..encoding.codec import LLMTimeCodec
from ..encoding.grammar import LLMTimeGrammar, grammar_for, longest_int_part
from ..encoding.scaling import Scale
from ..errors import FlopcastError
from ..model.attention import grouped_decoding
from ..model.compile import compile_on
from ..model.heads import numeric_head
from .automaton import Sampling, TokenAutomaton
from .decode import Decoder, rows_per_batch

CUDA_CHECK_EVERY = 8  # decode steps between looks at "is every row done" on an accelerator (each look syncs)

OnBatch = Callable[[dict[str, int]], None]


@dataclass
class Prompts:
    """What the model is given, per series: token ids, the scale its values were written with, and the text after its
    last complete step (``prefixes``; none: every prompt ends on a step). With ``skip_first_partial`` the completion
    of a prompt's cut step is generated but not scored (the seed protocol's windows)."""

    ids: list[list[int]]
    scales: list[Scale]
    n_vars: int
    prefixes: list[str] | None = None
    skip_first_partial: bool = False

    @property
    def extra(self) -> list[int]:
        """Steps generated per series before its ``horizon``: 1 to complete a cut step that is not scored."""
        prefixes = self.prefixes or [""] * len(self.ids)
        return [1 if (self.skip_first_partial and p) else 0 for p in prefixes]


@dataclass
class ForecastResult:
    point: np.ndarray                 # (N, H, V) original units; NaN where unparsed
    samples: np.ndarray | None        # (N, n_samples, H, V) or None
    quantiles: dict[float, np.ndarray]  # q -> (N, H, V)
    texts: list[list[str]]            # generated text per series per sample
    scales: list[Scale]               # (N,) the map each series' values were written with
    prompt_tokens: np.ndarray         # (N,) context tokens per series
    generated_tokens: np.ndarray      # (N,) tokens generated per series (all samples)
    parse_ok: np.ndarray              # (N,) all H steps parsed for every sample
    batches: list[dict[str, int]] = field(default_factory=list)  # per batch: B, prompt_len (padded), new_tokens
    capped: np.ndarray | None = None  # (N,) a value reached the decoder's integer-digit cap
    int_digits: int = 3               # that cap
    contexts: list[np.ndarray] | None = None  # the context of each series (as cut to a token limit), when known

    @property
    def parse_failure_rate(self) -> float:
        return float(1.0 - self.parse_ok.mean()) if len(self.parse_ok) else 0.0

    @property
    def capped_rate(self) -> float:
        return float(self.capped.mean()) if self.capped is not None and len(self.capped) else 0.0


def encode_contexts(codec: LLMTimeCodec, contexts: list[np.ndarray]) -> tuple[list[str], list[Scale]]:
    """Each context as LLMTime text, and the scale it was written with."""
    scales = [codec.series_scale(c) for c in contexts]
    return [codec.encode(c, a) for c, a in zip(contexts, scales)], scales


def forecast(model: Any, tokenizer: Any, codec: LLMTimeCodec, contexts: list[np.ndarray],
             config: ForecastConfig | None = None, progress: bool = False,
             on_batch: OnBatch | None = None) -> ForecastResult:
    """Forecast ``config.horizon`` steps after each context (raw values, (T_i, V))."""
    cfg = config or ForecastConfig()
    if not contexts:
        raise FlopcastError("no contexts to forecast")
    texts, scales = encode_contexts(codec, contexts)
    ids = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    return forecast_prompts(model, tokenizer, codec, Prompts(ids, scales, np.asarray(contexts[0]).shape[1]), cfg,
                            progress, on_batch)


def forecast_prompts(model: Any, tokenizer: Any, codec: LLMTimeCodec, prompts: Prompts, cfg: ForecastConfig,
                     progress: bool = False, on_batch: OnBatch | None = None) -> ForecastResult:
    """Forecast from token prompts. ``on_batch`` gets each finished batch's shape (B, prompt_len, new_tokens), e.g.
    to count FLOPs as they go."""
    grammar = grammar_for([tokenizer.decode(p) for p in prompts.ids], codec.config, prompts.n_vars,
                          cfg.max_int_digits)
    digits = grammar.max_int
    was_training = model.training
    model.eval()
    try:
        texts, batches = _generate_rows(model, tokenizer, grammar, prompts, cfg, progress, on_batch)
    finally:
        model.train(was_training)
    return _collect(texts, batches, codec, prompts, cfg, digits)


def _generate_rows(model: Any, tokenizer: Any, grammar: LLMTimeGrammar, prompts: Prompts, cfg: ForecastConfig,
                   progress: bool, on_batch: OnBatch | None) -> tuple[dict[tuple[int, int], str], list[dict[str, int]]]:
    """Generated text per (series, sample) row, in batches of rows sorted by prompt length (little padding;
    compiled, batches of one fixed shape: :func:`~flopcast.budget.costs.decode_batches`). The head computes only
    the grammar's columns (the characters it can ever allow): the same logits for those tokens, a fraction of the
    work."""
    device = next(model.parameters()).device
    automaton = TokenAutomaton(grammar, tokenizer, device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, extra, prefixes = prompts.ids, prompts.extra, prompts.prefixes or [""] * len(prompts.ids)
    rows = [(i, k) for i in range(len(ids)) for k in range(cfg.n_samples)]
    order = np.argsort([-len(ids[i]) for i, _ in rows], kind="stable")
    compiled = compile_on(cfg.compile, device)
    widths = decode_widths(model, cfg, len(rows), len(ids[rows[order[0]][0]]),
                           grammar.max_tokens(cfg.horizon + max(extra)))
    sampling = Sampling(cfg.greedy, cfg.temperature, torch.Generator(device).manual_seed(cfg.seed), cfg.top_p)
    texts: dict[tuple[int, int], str] = {}
    batches: list[dict[str, int]] = []
    with numeric_head(model, automaton.token_ids.tolist()), grouped_decoding(model):
        decoder = Decoder(model, automaton, pad_id, sampling, compiled, 1 if device.type == "cpu" else CUDA_CHECK_EVERY)
        for b, width in _batches(order, widths, progress):
            sel = [rows[k] for k in b]
            res = decoder.generate([ids[i] for i, _ in sel], [cfg.horizon + extra[i] for i, _ in sel],
                                   [prefixes[i] for i, _ in sel], rows=width)
            texts.update(zip(sel, res.texts))
            batches.append({"B": res.rows, "prompt_len": res.prompt_len, "new_tokens": res.steps})
            if on_batch:
                on_batch(batches[-1])
    return texts, batches


def decode_widths(model: Any, cfg: ForecastConfig, n_rows: int, longest: int, new_tokens: int) -> list[int]:
    """The rows each batch of a forecast computes (:func:`~flopcast.budget.costs.decode_batches`): what its FLOP
    bound counts and what :func:`forecast_prompts` runs, for ``n_rows`` rows whose longest prompt has ``longest``
    tokens."""
    compiled = compile_on(cfg.compile, next(model.parameters()).device)
    return decode_batches(n_rows, rows_per_batch(cfg.batch_size, model, longest, new_tokens, compiled), compiled)


def _batches(order: np.ndarray, widths: list[int], progress: bool) -> Iterable[tuple[np.ndarray, int]]:
    """Consecutive rows of ``order`` per batch (equally many when the batches are filled up) and each batch's
    width."""
    k = len(widths)
    counts = [len(order) // k + (j < len(order) % k) for j in range(k)] if len(set(widths)) == 1 else widths
    starts = np.cumsum([0, *counts])
    parts = [(order[starts[j]:starts[j + 1]], widths[j]) for j in range(k)]
    return tqdm(parts, desc="forecast", unit="batch", disable=None) if progress else parts


def _collect(texts: dict[tuple[int, int], str], batches: list[dict[str, int]], codec: LLMTimeCodec,
             prompts: Prompts, cfg: ForecastConfig, digits: int) -> ForecastResult:
    """Decode every row's text into values; the median and quantiles over samples."""
    N, K, H, V = len(prompts.ids), cfg.n_samples, cfg.horizon, prompts.n_vars
    extra = prompts.extra
    samples = np.full((N, K, H, V), np.nan)
    ok, capped = np.ones(N, dtype=bool), np.zeros(N, dtype=bool)
    gen_tokens = np.zeros(N, dtype=np.int64)
    by_series: list[list[str]] = [[] for _ in range(N)]
    for (i, k), t in texts.items():
        by_series[i].append(t)
        gen_tokens[i] += len(t)
        capped[i] |= longest_int_part([t], codec.config) >= digits
        body = t
        if extra[i]:  # drop the completion of the context's partial step
            cut = body.find(codec.config.step_sep)
            body = body[cut + 1:] if cut >= 0 else ""
        dec = codec.decode(body, V, prompts.scales[i])
        n = min(H, dec.n_steps)
        samples[i, k, :n] = dec.values[:n]
        ok[i] &= dec.n_valid >= H and not np.isnan(samples[i, k]).any()
    point = samples[:, 0] if K == 1 else np.nanmedian(samples, axis=1) if np.isfinite(samples).any() else samples[:, 0]
    quant = {} if K == 1 else {q: np.nanquantile(samples, q, axis=1) for q in cfg.quantiles}
    return ForecastResult(point, samples if K > 1 else None, quant, by_series, prompts.scales,
                          np.array([len(p) for p in prompts.ids]), gen_tokens, ok, batches, capped, digits)


def forecast_flops(model: Any, result: ForecastResult) -> int:
    """Analytic FLOPs of the generation that produced ``result`` (padded batches as computed)."""
    arch, lora = model_shape(model)
    return sum(batch_flops(arch, b, lora) for b in result.batches)
