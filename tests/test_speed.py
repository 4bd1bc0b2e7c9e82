"""Speed features that must not change results: torch.compile, chunked cross-entropy, the out-of-memory
message, random:DIR models (the batched LV-ODE fit, the device grammar and stored baselines are tested beside
the code they replace, in test_evaluate.py, test_forecast.py and test_pipeline.py)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import train_tiny

from flopcast.budget.ledger import Ledger
from flopcast.config import CodecConfig, LoraSpec
from flopcast.encoding.chunks import IGNORE
from flopcast.errors import FlopcastError, ModelNotAvailable
from flopcast.model.load import load_model, resolve_arch, save_model
from flopcast.model.lora import attach_lora


def _losses(run_dir) -> list[float]:
    rows = [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r] + [r["val_loss"] for r in rows if "val_loss" in r]


@pytest.mark.slow
def test_compiled_steps_give_the_eager_losses(tmp_path, data):
    train_tiny(tmp_path / "eager", data, steps=4, compile="off")
    train_tiny(tmp_path / "compiled", data, steps=4, compile="on")
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert len(eager) == 5 and np.allclose(eager, compiled, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "compiled" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("head", ["full", "numeric"])
def test_chunked_cross_entropy_equals_the_whole_batch(data, head):
    """Loss and LoRA gradients are the same whether the head and loss run at once or over sequence chunks."""
    from flopcast.model.heads import numeric_head, numeric_token_ids, remap_table
    from flopcast.model.loss import lm_loss

    tr, _, codec = data
    lm = load_model("tiny-qwen2", seed=0)
    model = attach_lora(lm.model, LoraSpec(rank=2))
    torch.manual_seed(1)
    for n, p in model.named_parameters():
        if "lora_B" in n:  # B starts at zero: give the adapter something to differentiate
            p.data.normal_(0, 0.1)
    ids = [lm.tokenizer(codec.encode(s), add_special_tokens=False).input_ids[:33] for s in tr[:3]]
    x = torch.tensor(ids)
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}
    batch["labels"][:, :4] = IGNORE
    head_ids = numeric_token_ids(lm.tokenizer, codec.config) if head == "numeric" else None
    table = remap_table(head_ids, lm.model.config.vocab_size, "cpu") if head_ids else None
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(max_bytes):
        model.zero_grad()
        loss = lm_loss(model, batch, table, max_logits_bytes=max_bytes, chunk_bytes=max_bytes)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in params]

    cols = len(head_ids) if head_ids else lm.model.config.vocab_size
    with numeric_head(lm.model, head_ids) if head_ids else torch.enable_grad():
        whole, gw = loss_and_grads(1 << 40)
        chunked, gc = loss_and_grads(3 * cols * 4 * 5)  # chunks of 5 positions
    assert torch.allclose(whole, chunked, atol=1e-6) and whole > 0
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(gw, gc)) and any(g.abs().sum() > 0 for g in gw)


def test_out_of_memory_is_one_line_naming_the_batch_that_fits(tmp_path, data, monkeypatch):
    import flopcast.training.engine as T

    real, handling = T._loss_fn, []

    def limited(*a):  # a device on which only one sequence fits
        fn = real(*a)

        def loss(b):
            if b["input_ids"].shape[0] < 4:  # a probe: what exception is being handled while it runs
                handling.append(sys.exc_info()[0])
            if b["input_ids"].shape[0] > 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 18.50 GiB")
            return fn(b)
        return loss

    monkeypatch.setattr(T, "_loss_fn", limited)
    lg = Ledger(tmp_path / "l.db", 1e13)
    with pytest.raises(FlopcastError, match=r"^out of memory .* batch_size 4, seq_len 64 .*: batch_size 1 fits") as e:
        train_tiny(tmp_path / "run", data, steps=3, ledger=lg, batch_size=4)
    assert "\n" not in str(e.value)
    (row,) = lg.entries()
    from flopcast.budget import flops as F

    per_step = F.train_step(F.Arch.from_config(load_model("tiny-qwen2").model.config), 4, 64, F.LoraShape(4)).total
    # the failed step and both probes (batch 2 fails, batch 1 fits) are charged: the ledger never undercounts
    assert row.status == "failed" and row.flops_used == per_step + per_step * 2 // 4 + per_step // 4
    assert handling == [None, None]  # probed after the handler: the failed step's traceback was let go first


def test_random_dir_builds_the_architecture_without_weights(tmp_path):
    saved = save_model(load_model("tiny-llama", seed=0), tmp_path / "arch")
    (saved / "model.safetensors").unlink()  # only the config and the tokenizer are needed
    lm = load_model(f"random:{saved}", seed=1)
    assert type(lm.model).__name__ == "LlamaForCausalLM" and lm.model.config.hidden_size == 64
    assert lm.tokenizer("1.5,2;", add_special_tokens=False).input_ids
    assert resolve_arch(f"random:{saved}").vocab == lm.model.config.vocab_size
    with pytest.raises(ModelNotAvailable, match="no config.json"):
        load_model(f"random:{tmp_path / 'missing'}")


def test_random_dir_of_the_real_qwen_architecture(qwen_arch_dir):
    from dataclasses import replace

    from flopcast.budget.flops import arch_for

    arch = resolve_arch(f"random:{qwen_arch_dir}")
    assert replace(arch, name="") == replace(arch_for("qwen2.5-0.5b"), name="") and arch.vocab == 151936


def _adapter_tensors(run_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(run_dir) / "adapter" / "adapter_model.safetensors")


def test_loss_read_every_few_steps_changes_nothing(tmp_path, data):
    """Losses left on the device and read every 3 steps (as on a GPU): the same log, the same adapter."""
    train_tiny(tmp_path / "each", data, steps=7, sync_every=1)
    train_tiny(tmp_path / "few", data, steps=7, sync_every=3)
    rows = [[{k: v for k, v in json.loads(ln).items() if k != "time"}
             for ln in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("each", "few")]
    assert rows[0] == rows[1] and len([r for r in rows[0] if "loss" in r]) == 7
    a, b = _adapter_tensors(tmp_path / "each"), _adapter_tensors(tmp_path / "few")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_divergence_read_late_keeps_the_weights_before_it(tmp_path, data, monkeypatch):
    """A NaN loss at step 3, read only at step 4: step 3 and every step after it are skipped on the device, so
    the adapter is the one after step 2, and the run is diverged with all four steps charged."""
    import flopcast.training.engine as T

    train_tiny(tmp_path / "two", data, steps=2)
    real, calls = T._loss_fn, []

    def poisoned(*a):
        fn = real(*a)
        return lambda b: calls.append(1) or fn(b) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(T, "_loss_fn", poisoned)
    res = train_tiny(tmp_path / "late", data, steps=8, sync_every=4, eval_every=100, checkpoint_every=100)
    assert res.status == "diverged" and res.steps == 4 and len(calls) == 4
    losses = _losses(tmp_path / "late")
    assert len(losses) == 4 and np.isnan(losses[2]) and np.isfinite(losses[3])  # step 4 ran on step 2's weights
    a, b = _adapter_tensors(tmp_path / "two"), _adapter_tensors(tmp_path / "late")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_gives_the_shared_base_model_back_uncompiled():
    from flopcast.model.compile import compile_body, uncompile_body
    from flopcast.model.parts import body

    lm = load_model("tiny-qwen2", seed=0)
    model = attach_lora(lm.model, LoraSpec(rank=2))
    layers = list(body(lm.model).layers)
    for graphs in (False, True):  # each decoder layer compiled; with CUDA graphs, the whole body
        compile_body(model, graphs=graphs)
        compiled = [m for m in [body(lm.model), *layers] if m._compiled_call_impl is not None]
        assert compiled == ([body(lm.model)] if graphs else layers)
        uncompile_body(model)
        assert all(m._compiled_call_impl is None for m in [body(lm.model), *layers])  # given back as it came


@pytest.mark.parametrize("head", ["full", "numeric"])
def test_bf16_model_trains_fp32_lora_weights_and_head_bias(head):
    """As on a GPU: a bf16 base model, LoRA weights and the LM-head bias in fp32. A bf16 bias near 0.5 would not
    move under a 1e-4 update (half a bf16 step there is about 1e-3); the fp32 one does."""
    from flopcast.model.heads import numeric_head, numeric_token_ids, remap_table
    from flopcast.model.loss import lm_loss
    from flopcast.training.step import Learner, make_optimizer, train_step

    lm = load_model("tiny-qwen2", seed=0)
    base = lm.model.to(torch.bfloat16)
    model = attach_lora(base, LoraSpec(rank=2, train_lm_head_bias=True))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values()), {
        n: p.dtype for n, p in trainable.items()}
    bias = base.get_output_embeddings().bias
    with torch.no_grad():
        bias.fill_(0.5)
    x = torch.randint(0, 40, (2, 16))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}
    ids = numeric_token_ids(lm.tokenizer, CodecConfig()) if head == "numeric" else None
    table = remap_table(ids, base.config.vocab_size, "cpu") if ids else None
    params = list(trainable.values())
    learner = Learner(model, make_optimizer(params, 1e-4, 0.0), params, lambda b: lm_loss(model, b, table))
    with numeric_head(base, ids) if ids else torch.enable_grad():
        loss = train_step(learner, batch, 1e-4)
    assert torch.isfinite(loss) and bias.dtype == torch.float32
    moved = (bias - 0.5).abs()
    assert moved.max() > 5e-5 and moved.max() < 2e-4  # one AdamW step of about lr, kept in fp32


def test_compiled_body_keeps_compiling_past_torchs_default_of_eight_variants(monkeypatch):
    """A study compiles the layers once per (sequence length, LoRA rank, grad mode), on code shared by every model
    instance: the reference plan makes 10 such variants in one process. At torch's default limit (8) the 9th and
    later ran eagerly; each of 10 fresh models at its own sequence length must get its own compiled graphs."""
    import torch._dynamo

    from flopcast.forecasting.decode import DecodeStep
    from flopcast.model.compile import RECOMPILE_LIMIT, compile_body, recompile_setting, uncompile_body

    compiled_graphs = []

    def counting_backend(gm, example_inputs):
        compiled_graphs.append(gm)
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": counting_backend}))
    # set and restored by hand: pytest's monkeypatch would restore torch's config attribute by deleting it, which
    # hides the setting from every later test in this process
    cfg = torch._dynamo.config
    name = recompile_setting()
    before = getattr(cfg, name)
    setattr(cfg, name, 8)  # torch's default, whatever earlier tests set
    torch._dynamo.reset()  # earlier tests' variants of the same code would count toward the limit
    per_shape = []
    try:
        for seq_len in range(8, 48, 4):
            model = load_model("tiny-qwen2", seed=0).model
            compile_body(model)
            n = len(compiled_graphs)
            with torch.no_grad():
                model(input_ids=torch.randint(0, 40, (2, seq_len)), use_cache=False)
            per_shape.append(len(compiled_graphs) - n)
            uncompile_body(model)
        assert per_shape[0] >= 1 and per_shape == per_shape[:1] * 10, per_shape  # the 9th and 10th compiled too
        assert getattr(cfg, name) == RECOMPILE_LIMIT
        setattr(cfg, name, 8)
        DecodeStep(load_model("tiny-qwen2", seed=0).model, compiled=True)  # compiled decoding raises it too
        assert getattr(cfg, name) == RECOMPILE_LIMIT
    finally:
        torch._dynamo.reset()
        setattr(cfg, name, before)


def test_training_and_validation_build_no_kv_cache(monkeypatch, data):
    """Models default to use_cache=True, which in training builds a KV cache per forward (every layer's keys and
    values copied, and traced into a compiled body); the loss is the same without it."""
    from types import SimpleNamespace

    from transformers import cache_utils

    from flopcast.encoding.chunks import Chunks
    from flopcast.model.loss import lm_loss
    from flopcast.training.step import Learner, validation_loss

    made = []
    real_init = cache_utils.DynamicCache.__init__

    def counting_init(self, *a, **kw):
        made.append(1)
        real_init(self, *a, **kw)

    monkeypatch.setattr(cache_utils.DynamicCache, "__init__", counting_init)
    lm = load_model("tiny-qwen2", seed=0)
    model = attach_lora(lm.model, LoraSpec(rank=2)).train()
    x = torch.randint(0, 40, (2, 16))
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}
    lm_loss(model, batch).backward()
    lm_loss(model, batch, max_logits_bytes=0, chunk_bytes=2 * 16 * 64).backward()  # the chunked path
    acc = SimpleNamespace(device="cpu", process_index=0, num_processes=1, reduce=lambda t, reduction: t)
    learner = Learner(model, None, [], lambda b: lm_loss(model, b), acc)
    val = validation_loss(learner, Chunks(x.numpy(), np.ones_like(x.numpy()), x.numpy()), 2)
    assert made == [] and np.isfinite(val)
    with_cache = model(**batch).loss  # what the model does by default
    assert made and torch.allclose(with_cache, lm_loss(model, batch))


def test_free_gpu_memory_is_measured_after_what_torch_held_is_given_back(monkeypatch):
    """CUDA faked (the path, on a CPU): free memory is read after the CUDA-graph pools are reset and the allocator's
    cache emptied, and it is the device's free memory only (reserved-but-unused memory is not counted again)."""
    from torch._inductor import cudagraph_trees

    from flopcast.model.load import free_memory

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cudagraph_trees, "reset_cudagraph_trees", lambda: calls.append("graphs"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("cache"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d: calls.append("measure") or (5 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 7 << 30)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: 1 << 30)
    assert free_memory("cuda") == 5 << 30
    assert calls == ["graphs", "cache", "measure"]
