import functools
import re

import numpy as np
import pytest
from helpers import lively_tiny

from flopcast.config import CodecConfig, ForecastConfig
from flopcast.encoding.codec import LLMTimeCodec
from flopcast.encoding.scaling import Scale
from flopcast.forecasting.forecast import forecast, forecast_flops
from flopcast.model.load import load_model


def _contexts(rng, n, lo=3, hi=25, scale=3.0):
    return [rng.random((int(rng.integers(lo, hi)), 2)) * scale for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("codec_cfg",
                         [CodecConfig(), CodecConfig(drop_decimal_point=True),
                          CodecConfig(decimals=1, scale_mode="per_series")])
def test_constrained_output_always_decodes(seed, codec_cfg):
    lm = load_model("tiny-llama" if seed % 2 else "tiny-qwen2", seed=seed)
    codec = LLMTimeCodec(codec_cfg, Scale.from_state(1.0) if codec_cfg.scale_mode == "global" else None)
    rng = np.random.default_rng(seed)
    res = forecast(lm.model, lm.tokenizer, codec, _contexts(rng, 7), ForecastConfig(horizon=4, batch_size=3))
    if codec_cfg.drop_decimal_point:
        num = r"\d{1,%d}" % (3 + codec_cfg.decimals)
    else:
        num = r"\d{1,3}\.\d{%d}" % codec_cfg.decimals
    for (t,) in res.texts:
        assert re.fullmatch(f"({num},{num};){{4}}", t), t
    assert res.parse_ok.all() and res.parse_failure_rate == 0.0
    assert res.point.shape == (7, 4, 2) and np.isfinite(res.point).all()


@pytest.mark.parametrize("family", ["tiny-qwen2", "tiny-llama"])
def test_batched_equals_one_by_one(family):
    model, tok = lively_tiny(family)
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(0.5))
    ctx = _contexts(np.random.default_rng(5), 9)
    batched = forecast(model, tok, codec, ctx, ForecastConfig(horizon=5, batch_size=4))
    single = forecast(model, tok, codec, ctx, ForecastConfig(horizon=5, batch_size=1))
    assert batched.texts == single.texts
    np.testing.assert_array_equal(batched.point, single.point)
    assert len({t[0] for t in batched.texts}) > 1  # not a degenerate constant forecast


def test_sampling_median_quantiles_seeded(tiny):
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0))
    ctx = _contexts(np.random.default_rng(1), 3)
    cfg = ForecastConfig(horizon=3, n_samples=6, temperature=1.5, seed=4)
    a = forecast(tiny.model, tiny.tokenizer, codec, ctx, cfg)
    b = forecast(tiny.model, tiny.tokenizer, codec, ctx, cfg)
    assert a.samples.shape == (3, 6, 3, 2) and a.texts == b.texts
    np.testing.assert_array_equal(a.point, np.median(a.samples, axis=1))
    assert np.all(a.quantiles[0.1] <= a.quantiles[0.9])
    assert len(set(a.texts[0])) > 1  # samples differ


def test_values_in_original_units(tiny):
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(4.0))
    res = forecast(tiny.model, tiny.tokenizer, codec, [np.ones((5, 2))], ForecastConfig(horizon=2))
    dec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0)).decode(res.texts[0][0], 2)
    np.testing.assert_allclose(res.point[0], dec.values[:2] * 4.0)


def test_forecast_flops_counted(tiny):
    from flopcast.budget import flops

    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0))
    res = forecast(tiny.model, tiny.tokenizer, codec, _contexts(np.random.default_rng(2), 5),
                   ForecastConfig(horizon=2, batch_size=2))
    arch = flops.Arch.from_config(tiny.model.config)
    expect = sum(flops.generate_total(arch, b["B"], b["prompt_len"], b["new_tokens"]) for b in res.batches)
    assert forecast_flops(tiny.model, res) == expect > 0
    assert [b["B"] for b in res.batches] == [2, 2, 1]


@pytest.mark.slow
def test_embedded_model_forecast_parses():
    lm = load_model("smollm2-135m")
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(1.0))
    t = np.linspace(0, 6, 40)
    ctx = [np.stack([2 + np.sin(t + p), 1 + 0.5 * np.cos(t + p)], 1) for p in (0.0, 1.0, 2.0)]
    res = forecast(lm.model, lm.tokenizer, codec, ctx, ForecastConfig(horizon=5, batch_size=3))
    assert res.parse_ok.all()
    assert np.abs(res.point - np.stack([c[-1] for c in ctx])[:, None]).max() < 3  # plausible continuation


def _python_grammar_decode(model, tok, prompts, grammar, targets, prefixes):
    """The reference: one Python grammar state per row, a full-vocabulary mask per step, host-side argmax."""
    import torch

    from flopcast.encoding.grammar import EOS

    ids = {c: tok(c, add_special_tokens=False).input_ids[0] for c in grammar.alphabet} | {EOS: tok.eos_token_id}
    chars = {i: c for c, i in ids.items()}
    vocab = model.get_output_embeddings().weight.shape[0]
    out = []
    for prompt, target, prefix in zip(prompts, targets, prefixes):
        st, seq, text = grammar.start(target, prefix), list(prompt), ""
        for _ in range(grammar.max_tokens(target)):
            if st.done:
                break
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
            mask = torch.zeros(vocab, dtype=torch.bool)
            mask[[ids[c] for c in grammar.allowed(st)]] = True
            ch = chars[int(logits.masked_fill(~mask, float("-inf")).argmax())]
            grammar.advance(st, ch)
            text, seq = text + ch, seq + [ids[ch]]
        out.append(text)
    return out


def _qwen2_tokenizer(arch_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(arch_dir)


@pytest.mark.parametrize("style", ["char-level", "qwen2-bpe"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_device_grammar_greedy_equals_python_grammar(style, seed, request):
    """Random prompts (random codecs, partial last steps, mixed targets and digit caps): the tensor automaton's
    greedy tokens equal the Python grammar's, row by row."""
    import torch
    from transformers import AutoModelForCausalLM

    from flopcast.encoding.grammar import LLMTimeGrammar
    from flopcast.forecasting.automaton import TokenAutomaton
    from flopcast.forecasting.decode import Decoder
    from flopcast.model.load import tiny_config, tiny_tokenizer

    rng = np.random.default_rng(seed)
    tok = tiny_tokenizer() if style == "char-level" else _qwen2_tokenizer(request.getfixturevalue("qwen_arch_dir"))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config("tiny-qwen2", vocab_size=len(tok), initializer_range=0.3))
    codec_cfg = [CodecConfig(), CodecConfig(drop_decimal_point=True), CodecConfig(decimals=1)][seed % 3]
    codec = LLMTimeCodec(codec_cfg, scale=Scale.from_state(float(rng.uniform(0.05, 1.0))))
    contexts = _contexts(rng, 6, scale=50.0)
    texts = [codec.encode(c) for c in contexts]
    steps = [codec.encode(c[-1:]) for c in contexts]  # a partial step (or an over-long one) after some prompts
    prefixes = [s[:int(rng.integers(1, len(s)))] if k % 2 else "" for k, s in enumerate(steps)]
    texts = [t + p for t, p in zip(texts, prefixes)]
    prompts = [tok(t, add_special_tokens=False).input_ids for t in texts]
    targets = [int(rng.integers(0, 4)) for _ in texts]
    grammar = LLMTimeGrammar(codec_cfg, 2, int(rng.integers(2, 5)))
    model.eval()
    ref = _python_grammar_decode(model, tok, prompts, grammar, targets, prefixes)
    got = Decoder(model, TokenAutomaton(grammar, tok), tok.eos_token_id).generate(prompts, targets, prefixes)
    assert got.texts == ref
    assert got.steps == max(map(len, ref)) or (got.steps == 1 and not any(ref))
    assert sum(map(len, ref)) > 10  # the rows did generate


def test_auto_batch_size_from_free_memory():
    """"auto" is 16 rows on the CPU; on a GPU the rows whose KV cache and prefill activations fit in free memory."""
    from types import SimpleNamespace

    from flopcast.forecasting.decode import CPU_BATCH, MAX_AUTO_BATCH, batch_for_memory, rows_per_batch

    model, _ = lively_tiny()
    assert rows_per_batch("auto", model, 768, 60) == CPU_BATCH and rows_per_batch(7, model, 768, 60) == 7
    qwen = SimpleNamespace(num_attention_heads=14, num_key_value_heads=2, hidden_size=896, intermediate_size=4864,
                           num_hidden_layers=24, head_dim=64)
    gib = 1 << 30
    small, big = (batch_for_memory(f * gib, qwen, 768, 60, 2) for f in (4, 100))
    assert 1 <= small < big <= MAX_AUTO_BATCH
    kv_row = 2 * 24 * 2 * 64 * 828 * 2  # bytes of one row's KV cache in bf16
    assert small * kv_row < 0.6 * 4 * gib  # what it plans fits in the share of free memory it may use
    assert batch_for_memory(1 << 20, qwen, 768, 60, 2) == 1  # never less than one row
    assert batch_for_memory(1 << 50, qwen, 768, 60, 2) == MAX_AUTO_BATCH
    # a power of two: the same batch (and compiled decoding shapes) while free memory varies a little
    sizes = {batch_for_memory(int(f * gib), qwen, 768, 60, 2) for f in np.linspace(4, 7.9, 40)}
    assert len(sizes) <= 2 and all(s & (s - 1) == 0 for s in sizes)


def test_a_failing_compiled_decode_step_warns_and_decodes_eagerly(monkeypatch):
    import torch

    from flopcast.model.compile import compile_on

    model, tok = lively_tiny()
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(0.5))
    ctx = _contexts(np.random.default_rng(3), 4)
    eager = forecast(model, tok, codec, ctx, ForecastConfig(horizon=3, compile="off"))

    def broken(fn, **kw):
        def run(*a):
            raise RuntimeError("backend compiler failed\nlong trace")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(UserWarning, match=r"compiled decoding failed \(RuntimeError: backend compiler failed\)"):
        res = forecast(model, tok, codec, ctx, ForecastConfig(horizon=3, compile="on"))
    assert res.texts == eager.texts
    assert not compile_on("off", "cuda") and compile_on(None, "cuda")
    assert not compile_on("auto", "cpu")
    from flopcast.config import TrainConfig
    from flopcast.errors import FlopcastError
    from flopcast.model.compile import graphs_on

    assert compile_on("graphs", "cpu") and not graphs_on("graphs", "cpu")  # CUDA graphs need CUDA: plain compile
    assert graphs_on("graphs", "cuda") and not graphs_on("on", "cuda") and not graphs_on(None, "cuda")
    assert TrainConfig(compile="graphs").compile == "graphs"
    with pytest.raises(FlopcastError, match="compile must be one of"):
        TrainConfig(compile="fast")


@pytest.mark.slow
def test_compiled_decode_step_gives_the_eager_tokens(monkeypatch):
    """torch.compile of the decode step (static shapes: the mask covers the whole cache) changes no token; prompts
    of different lengths and a short last batch compile one graph per (batch, cache-length bucket), not one per
    prompt length or row count."""
    model, tok = lively_tiny()
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(0.5))
    rng = np.random.default_rng(4)
    ctx = [rng.random((6 + i, 2)) * 3 for i in range(5)]  # five prompt lengths, three batches of two (one filler)
    import torch
    from torch._inductor.compile_fx import compile_fx

    from flopcast.forecasting.decode import decode_span

    eager = forecast(model, tok, codec, ctx, ForecastConfig(horizon=4, batch_size=2, compile="off"))
    graphs, real_compile = [], torch.compile
    inductor = lambda gm, example: graphs.append(gm) or compile_fx(gm, example)  # noqa: E731
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": inductor}))
    torch._dynamo.reset()
    compiled = forecast(model, tok, codec, ctx, ForecastConfig(horizon=4, batch_size=2, compile="on"))
    assert compiled.texts == eager.texts and len({t[0] for t in eager.texts}) > 1
    assert len({b["prompt_len"] for b in compiled.batches}) == 3 and [b["B"] for b in compiled.batches] == [2, 2, 2]
    limit = max(b["new_tokens"] for b in compiled.batches)
    spans = {decode_span(b["prompt_len"], limit, True) for b in compiled.batches}
    assert 0 < len(graphs) <= len(spans) < 3  # a graph per shape bucket, not per decode step or prompt length


def test_compiled_decoding_fills_every_batch_to_one_shape(monkeypatch):
    """Compiled decoding (torch.compile stubbed: the path, not the compiler) splits the rows evenly and fills each
    batch up to one bucket size with rows that generate nothing: the eager texts, and the filler rows are charged
    (computed, so counted) within the bound the callers reserve (:func:`decode_widths`)."""
    import torch

    from flopcast.budget.costs import decode_batches
    from flopcast.forecasting.forecast import decode_widths

    model, tok = lively_tiny()
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(0.5))
    ctx = _contexts(np.random.default_rng(9), 7)
    eager = forecast(model, tok, codec, ctx, ForecastConfig(horizon=3, batch_size=5, compile="off"))
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    cfg = ForecastConfig(horizon=3, batch_size=5, compile="on")
    filled = forecast(model, tok, codec, ctx, cfg)
    assert filled.texts == eager.texts and len({t[0] for t in eager.texts}) > 1
    assert [b["B"] for b in eager.batches] == [5, 2] and [b["B"] for b in filled.batches] == [4, 4]
    assert decode_widths(model, cfg, 7, 10, 20) == decode_batches(7, 5, True) == [4, 4]
    assert forecast_flops(model, filled) > forecast_flops(model, eager)  # the filler rows are computed


@pytest.mark.parametrize("family", ["tiny-qwen2", "tiny-llama"])
def test_bf16_forecasts_follow_the_grammar_and_repeat(family):
    """bf16 logits tie far more often than fp32 ones (greedy picks the lowest token id of a tie): forecasting on a
    bf16 model, as on a GPU, still writes only the grammar, decodes every row, depends on the context and gives
    the same texts for the same call (sampling included)."""
    import torch

    model, tok = lively_tiny(family)
    model = model.to(torch.bfloat16)
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(0.5))
    ctx = _contexts(np.random.default_rng(6), 6)
    for cfg in (ForecastConfig(horizon=4, batch_size=4), ForecastConfig(horizon=4, n_samples=3, seed=2)):
        a, b = forecast(model, tok, codec, ctx, cfg), forecast(model, tok, codec, ctx, cfg)
        assert a.texts == b.texts and a.parse_ok.all() and np.isfinite(a.point).all()
        for row in a.texts:
            for t in row:
                assert re.fullmatch(r"(\d{1,3}\.\d{2},\d{1,3}\.\d{2};){4}", t), t
    assert len({t[0] for t in a.texts}) > 1 and len(set(a.texts[0])) > 1


def test_batches_of_one_shape_share_a_kv_cache_and_forecast_as_one_batch():
    """Batches of one shape share one StaticCache (emptied between them): the same forecasts as one batch."""
    model, tok = lively_tiny()
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(0.5))
    rng = np.random.default_rng(7)
    ctx = [rng.random((8, 2)) * 3 for _ in range(5)]  # equal lengths: every batch of one row has the same shape
    assert len({len(tok(codec.encode(c), add_special_tokens=False).input_ids) for c in ctx}) == 1
    one_by_one = forecast(model, tok, codec, ctx, ForecastConfig(horizon=4, batch_size=1))
    together = forecast(model, tok, codec, ctx, ForecastConfig(horizon=4, batch_size=5))
    assert one_by_one.texts == together.texts and len({t[0] for t in together.texts}) > 1


def test_grouped_decode_attention_is_transformers_sdpa_without_the_copies():
    """decode_attention: one query token per row, grouped heads, a padding mask -> the numbers of transformers' SDPA
    with every key/value head copied out (repeat_kv); other shapes go to that function itself."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    from flopcast.model.attention import decode_attention

    torch.manual_seed(0)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    B, kv, S, D = 4, 2, 11, 8
    key, value = torch.randn(B, kv, S, D), torch.randn(B, kv, S, D)
    mask = torch.ones(B, 1, 1, S, dtype=torch.bool)
    mask[0, ..., :4] = mask[2, ..., :7] = False  # left padding
    q = torch.randn(B, kv * 3, 1, D)
    got, _ = decode_attention(module, q, key, value, mask, scaling=0.3)
    want = torch.nn.functional.scaled_dot_product_attention(q, repeat_kv(key, 3), repeat_kv(value, 3),
                                                            attn_mask=mask, scale=0.3).transpose(1, 2)
    assert got.shape == (B, 1, kv * 3, D) and torch.allclose(got, want, atol=1e-6)
    prefill = torch.randn(B, kv * 3, 5, D)  # several query tokens on the CPU: SDPA's grouped heads, the same bits
    m5 = torch.tril(torch.ones(5, S, dtype=torch.bool), diagonal=S - 5).expand(B, 1, 5, S).clone()
    m5[1, ..., :3] = False
    assert torch.equal(decode_attention(module, prefill, key, value, m5)[0],
                       sdpa_attention_forward(module, prefill, key, value, m5)[0])
    per_head = m5.expand(B, kv * 3, 5, S)  # other masks: transformers' own function
    assert torch.equal(decode_attention(module, prefill, key, value, per_head)[0],
                       sdpa_attention_forward(module, prefill, key, value, per_head)[0])


def test_attention_reads_only_the_cache_positions_some_query_sees(monkeypatch):
    """On the CPU the keys after the last position that any query may see (a static cache's unwritten tail, a
    prefill chunk's later positions) are not read; the output is the whole cache's, to float rounding."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from flopcast.model.attention import decode_attention

    torch.manual_seed(1)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 3, True
    B, kv, S, D = 3, 2, 20, 8
    key, value = torch.randn(B, kv, S, D), torch.randn(B, kv, S, D)
    real, read = torch.nn.functional.scaled_dot_product_attention, []
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: read.append(k.shape[2]) or real(q, k, v, **kw))
    for q_len, end in [(1, 13), (4, 9)]:  # a decode step at position 12; a prefill chunk of positions 5-8
        mask = (torch.arange(S) < torch.arange(end - q_len + 1, end + 1)[:, None]).expand(B, 1, q_len, S).clone()
        mask[0, ..., :2] = False  # left padding
        q = torch.randn(B, kv * 3, q_len, D)
        got = decode_attention(module, q, key, value, mask)[0]
        assert read[-1] == end
        torch.testing.assert_close(got, sdpa_attention_forward(module, q, key, value, mask)[0], rtol=1e-5, atol=1e-6)
        assert read[-1] == S  # transformers' own path reads the whole cache


def test_decode_steps_do_not_copy_the_kv_cache_per_head(monkeypatch):
    """Where transformers' SDPA copies every cached key and value out to each query head (in the prefill; in decode
    steps under torch.compile, and always in releases such as 5.17), flopcast's decoding on the CPU does not, in
    the prefill or any step: the forecasts are the same, and the model's attention is SDPA again afterwards."""
    import contextlib

    import transformers.integrations.sdpa_attention as sa

    import flopcast.forecasting.forecast as fc

    model, tok = lively_tiny()
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(0.5))
    ctx = _contexts(np.random.default_rng(5), 6)
    cfg = ForecastConfig(horizon=3, batch_size=3, compile="off")
    before = forecast(model, tok, codec, ctx, cfg)
    copies = []
    real_repeat = sa.repeat_kv
    monkeypatch.setattr(sa, "repeat_kv", lambda h, n: copies.append(h.shape) or real_repeat(h, n))
    # its path under torch.compile (releases without pack_gqa, such as 5.17, always take it)
    monkeypatch.setattr(sa, "is_torchdynamo_compiling", lambda: True, raising=False)
    after = forecast(model, tok, codec, ctx, cfg)
    assert after.texts == before.texts and copies == []
    assert model.config._attn_implementation == "sdpa"
    monkeypatch.setattr(fc, "grouped_decoding", lambda m: contextlib.nullcontext())  # without it: a copy per step
    assert forecast(model, tok, codec, ctx, cfg).texts == before.texts
    forwards = sum(b["new_tokens"] for b in after.batches)  # per batch the prefill, then a step per token but the last
    assert len(copies) == 2 * model.config.num_hidden_layers * forwards  # keys and values, per layer


def test_prefill_chunks_keep_activations_under_the_limit():
    """On the CPU a prefill forward's largest activation (rows x positions x MLP width) stays under
    PREFILL_CHUNK_BYTES, in equal chunks; an accelerator prefills the whole prompt at once."""
    import torch

    from flopcast.forecasting.decode import PREFILL_CHUNK_BYTES, prefill_tokens

    model, _ = lively_tiny()
    width = model.config.intermediate_size
    for rows, length in [(32, 255), (16, 768), (1, 40), (512, 1000)]:
        chunk = prefill_tokens(model, rows, length)
        n = -(-length // chunk)
        assert 1 <= chunk <= length and (rows * chunk * width * 4 <= PREFILL_CHUNK_BYTES or chunk == 1)
        assert length - (n - 1) * chunk >= chunk - n  # no short last chunk
    fp32 = prefill_tokens(model, 2048, 1000)
    assert prefill_tokens(model.to(torch.float64), 2048, 1000) in (fp32 // 2, fp32 // 2 + 1)  # bytes, not elements
    assert fp32 < 1000 == prefill_tokens(model.to("meta"), 2048, 1000)


def test_chunked_prefill_gives_the_whole_prompts_cache_and_forecasts(monkeypatch):
    """Prefilling a few positions per forward (uneven prompt lengths, left padding, a short last chunk) writes the
    cache and gives the next-token logits of one whole-prompt forward, and the same greedy forecasts."""
    import torch
    from transformers import StaticCache

    import flopcast.forecasting.decode as dec

    model, tok = lively_tiny()
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(0.5))
    ctx = _contexts(np.random.default_rng(8), 8)
    prompts = [tok(codec.encode(c), add_special_tokens=False).input_ids for c in ctx]
    ids, attn, pos = dec._left_padded(prompts, tok.eos_token_id, "cpu")
    mask = torch.cat([attn, torch.ones((len(prompts), 9), dtype=attn.dtype)], dim=1)
    outs = []
    with torch.no_grad():
        for chunk in (ids.shape[1], 5):
            cache = StaticCache(config=model.config, max_cache_len=mask.shape[1])
            outs.append((dec._prefill(model, ids, mask, pos, cache, chunk), cache))
    (whole, c_whole), (chunked, c_chunked) = outs
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    for a, b in zip(c_whole.layers, c_chunked.layers):
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-5)

    forwards = []
    real = model.forward

    @functools.wraps(real)  # the same signature: decoding still finds its cache argument
    def counting(*a, **k):
        forwards.append(k["input_ids"].shape[1])
        return real(*a, **k)

    monkeypatch.setattr(model, "forward", counting)
    cfg = ForecastConfig(horizon=5, batch_size=4)
    once = forecast(model, tok, codec, ctx, cfg)
    assert sum(n > 1 for n in forwards) == len(once.batches)
    monkeypatch.setattr(dec, "PREFILL_CHUNK_BYTES", 4 * 3 * model.config.intermediate_size * 4)  # 3 positions
    forwards.clear()
    chunked = forecast(model, tok, codec, ctx, cfg)
    assert chunked.texts == once.texts and len({t[0] for t in once.texts}) > 1
    assert max(forwards) == 3 and len(forwards) > len(once.batches) * 20


def test_decode_steps_copy_nothing_between_host_and_device(monkeypatch):
    """Positions are built on the device once and samples are drawn there with a device generator: a longer
    forecast makes no more host tensors (``torch.tensor``) or host copies (``.cpu()``) than a shorter one."""
    import torch

    model, tok = lively_tiny()
    codec = LLMTimeCodec(CodecConfig(), scale=Scale.from_state(0.5))
    ctx = _contexts(np.random.default_rng(2), 3)
    calls = {"tensor": 0, "cpu": 0}
    real_tensor, real_cpu = torch.tensor, torch.Tensor.cpu

    def tensor(*a, **kw):
        calls["tensor"] += 1
        return real_tensor(*a, **kw)

    def cpu(self, *a, **kw):
        calls["cpu"] += 1
        return real_cpu(self, *a, **kw)

    monkeypatch.setattr(torch, "tensor", tensor)
    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    seen = []
    for horizon in (2, 6):
        calls.update(tensor=0, cpu=0)
        res = forecast(model, tok, codec, ctx, ForecastConfig(horizon=horizon, n_samples=2, seed=1, batch_size=6))
        assert sum(b["new_tokens"] for b in res.batches) > 4 * horizon  # many decode steps
        seen.append(dict(calls))
    assert seen[0] == seen[1], seen
