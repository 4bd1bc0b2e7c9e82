"""Batched, KV-cached, grammar-constrained forecasting with a causal LM.

Contexts are encoded with the codec, left-padded into batches (sorted by length so padding is
small), prefilled once (logits only for the last position), then decoded token by token. The
:class:`LLMTimeGrammar`, compiled to tensors (:class:`flopcast.automaton.TokenAutomaton`), masks the
logits on the device so only well-formed LLMTime can be produced, and each row stops as soon as its
``horizon`` steps are complete. Greedy by default; with
``n_samples > 1`` each context is sampled ``n`` times -> median point forecast and quantiles.

Values may have one more integer digit than the largest value in the prompts (at least 3, see
:func:`flopcast.grammar.int_digits_for`); forecasts that reach that cap are flagged in ``capped``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .accel import compile_on
from .attention import grouped_decoding
from .automaton import TokenAutomaton
from .codec import LLMTimeCodec
from .config import ForecastConfig
from .costs import batch_flops, model_shape
from .decode import DecodeStep, generate_constrained, rows_per_batch
from .errors import FlopcastError
from .grammar import LLMTimeGrammar, int_digits_for, longest_int_part
from .heads import numeric_head

CUDA_CHECK_EVERY = 8  # decode steps between looks at "is every row done" on an accelerator (each look syncs)


@dataclass
class ForecastResult:
    point: np.ndarray                 # (N, H, V) original units; NaN where unparsed
    samples: np.ndarray | None        # (N, n_samples, H, V) or None
    quantiles: dict[float, np.ndarray]  # q -> (N, H, V)
    texts: list[list[str]]            # generated text per series per sample
    alphas: np.ndarray                # (N,)
    prompt_tokens: np.ndarray         # (N,) context tokens per series
    generated_tokens: np.ndarray      # (N,) tokens generated per series (all samples)
    parse_ok: np.ndarray              # (N,) all H steps parsed for every sample
    batches: list[dict] = field(default_factory=list)  # per batch: B, prompt_len (padded), new_tokens
    capped: np.ndarray | None = None  # (N,) a value reached the decoder's integer-digit cap
    int_digits: int = 3               # that cap
    contexts: list[np.ndarray] | None = None  # the context of each series (as cut to a token limit), when known

    @property
    def parse_failure_rate(self) -> float:
        return float(1.0 - self.parse_ok.mean()) if len(self.parse_ok) else 0.0

    @property
    def capped_rate(self) -> float:
        return float(self.capped.mean()) if self.capped is not None and len(self.capped) else 0.0


def _batches(order: np.ndarray, size: int):
    for i in range(0, len(order), size):
        yield order[i:i + size]


def encode_contexts(codec: LLMTimeCodec, contexts: list[np.ndarray]) -> tuple[list[str], np.ndarray]:
    alphas = np.array([codec.series_alpha(c) for c in contexts], dtype=np.float64)
    return [codec.encode(c, a) for c, a in zip(contexts, alphas)], alphas


def forecast(model, tokenizer, codec: LLMTimeCodec, contexts: list[np.ndarray],
             config: ForecastConfig | None = None, progress: bool = False,
             on_batch: Callable[[dict], None] | None = None) -> ForecastResult:
    """Forecast ``config.horizon`` steps after each context (raw values, (T_i, V))."""
    cfg = config or ForecastConfig()
    if not contexts:
        raise FlopcastError("no contexts to forecast")
    V = np.asarray(contexts[0]).shape[1]
    texts, alphas = encode_contexts(codec, contexts)
    prompts = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    return forecast_prompts(model, tokenizer, codec, prompts, alphas, V, cfg, [""] * len(prompts), progress,
                            on_batch=on_batch)


def forecast_prompts(model, tokenizer, codec: LLMTimeCodec, prompts: list[list[int]], alphas: np.ndarray,
                     n_vars: int, cfg: ForecastConfig, prefixes: list[str], progress: bool = False,
                     skip_first_partial: bool = False,
                     on_batch: Callable[[dict], None] | None = None) -> ForecastResult:
    """Forecast from token prompts. ``prefixes`` is each prompt's text after its last complete step;
    with ``skip_first_partial`` a non-empty prefix's completion is generated but not scored.
    ``on_batch`` gets each finished batch's shape (B, prompt_len, new_tokens), e.g. to count FLOPs as they go."""
    digits = cfg.max_int_digits or int_digits_for([tokenizer.decode(p) for p in prompts], codec.config)
    grammar = LLMTimeGrammar(codec.config, n_vars, digits)
    extra = [1 if (skip_first_partial and p) else 0 for p in prefixes]
    was_training = model.training
    model.eval()
    try:
        out_text, batches = _generate_rows(model, tokenizer, grammar, prompts, prefixes, extra, cfg, progress, on_batch)
    finally:
        model.train(was_training)
    return _collect(out_text, batches, codec, prompts, alphas, n_vars, cfg, extra, digits)


def _generate_rows(model, tokenizer, grammar: LLMTimeGrammar, prompts, prefixes, extra, cfg: ForecastConfig, progress,
                   on_batch) -> tuple[dict[tuple[int, int], str], list[dict]]:
    """Generated text per (series, sample) row, in batches of rows sorted by prompt length (little padding).
    The head computes only the grammar's columns (the characters it can ever allow): the same logits for those
    tokens, a fraction of the work."""
    device = next(model.parameters()).device
    automaton = TokenAutomaton(grammar, tokenizer, device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [(i, k) for i in range(len(prompts)) for k in range(cfg.n_samples)]
    order = np.argsort([-len(prompts[i]) for i, _ in rows], kind="stable")
    size = rows_per_batch(cfg.batch_size, model, len(prompts[rows[order[0]][0]]),
                          grammar.max_tokens(cfg.horizon + max(extra)))
    gen = torch.Generator().manual_seed(cfg.seed)
    out_text: dict[tuple[int, int], str] = {}
    batches: list[dict] = []
    it = list(_batches(order, size))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="forecast", unit="batch", disable=None)
    with numeric_head(model, automaton.token_ids.tolist()), grouped_decoding(model):
        step = DecodeStep(model, compile_on(cfg.compile, device))
        for b in it:
            sel = [rows[k] for k in b]
            res = generate_constrained(
                model, [prompts[i] for i, _ in sel], automaton, [cfg.horizon + extra[i] for i, _ in sel],
                [prefixes[i] for i, _ in sel], pad_id, greedy=cfg.greedy, temperature=cfg.temperature, generator=gen,
                check_every=1 if device.type == "cpu" else CUDA_CHECK_EVERY, step=step)
            out_text.update(zip(sel, res.texts))
            batches.append({"B": len(sel), "prompt_len": res.prompt_len, "new_tokens": res.steps})
            if on_batch:
                on_batch(batches[-1])
    return out_text, batches


def _collect(out_text, batches, codec: LLMTimeCodec, prompts, alphas, n_vars: int, cfg: ForecastConfig, extra,
             digits: int) -> ForecastResult:
    """Decode every row's text into values; the median and quantiles over samples."""
    N, K, H = len(prompts), cfg.n_samples, cfg.horizon
    samples = np.full((N, K, H, n_vars), np.nan)
    ok, capped = np.ones(N, dtype=bool), np.zeros(N, dtype=bool)
    gen_tokens = np.zeros(N, dtype=np.int64)
    texts: list[list[str]] = [[] for _ in range(N)]
    for (i, k), t in out_text.items():
        texts[i].append(t)
        gen_tokens[i] += len(t)
        capped[i] |= longest_int_part([t], codec.config) >= digits
        body = t
        if extra[i]:  # drop the completion of the context's partial step
            cut = body.find(codec.config.step_sep)
            body = body[cut + 1:] if cut >= 0 else ""
        dec = codec.decode(body, n_vars, alpha=alphas[i])
        n = min(H, dec.n_steps)
        samples[i, k, :n] = dec.values[:n]
        ok[i] &= dec.n_valid >= H and not np.isnan(samples[i, k]).any()
    point = samples[:, 0] if K == 1 else np.nanmedian(samples, axis=1) if np.isfinite(samples).any() else samples[:, 0]
    quant = {} if K == 1 else {q: np.nanquantile(samples, q, axis=1) for q in cfg.quantiles}
    return ForecastResult(point, samples if K > 1 else None, quant, texts, alphas,
                          np.array([len(p) for p in prompts]), gen_tokens, ok, batches, capped, digits)


def forecast_flops(model, result: ForecastResult) -> int:
    """Analytic FLOPs of the generation that produced ``result`` (padded batches as computed)."""
    arch, lora = model_shape(model)
    return sum(batch_flops(arch, b, lora) for b in result.batches)
