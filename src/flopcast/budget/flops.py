"""Analytic FLOP counts for decoder-only transformers (Qwen2 / Llama families). No torch.

Conventions of the reference study (primitive costs):

=====================  =====  ============================================================
primitive              FLOPs  notes
=====================  =====  ============================================================
add, sub, mul, div, neg  1    comparisons (softmax max) counted as 1 too
ReLU, abs                1
exp, log                 10
sin, cos, sqrt           10
(m x n)(n x p) matmul    m*p*(2n-1)   ``matmul="fma"`` gives 2mnp, as torch's FlopCounterMode
backward                 2 x forward  (so a training step is 3 x forward + optimizer)
tokenization, RoPE
sin/cos tables           0
=====================  =====  ============================================================

Per-layer terms for ``B`` sequences, ``q`` new query tokens each, keys of length ``k``
(prefill/training: ``q = k = S``; one KV-cached decode step: ``q = 1``), ``T = B*q`` tokens,
hidden ``d``, ``h`` heads of size ``dh``, ``hk`` KV heads (``gqa="full"``: counted as ``h``,
the reference convention; ``"actual"``: ``hk``), MLP width ``f``, vocabulary ``V``:

============  ===================================================================================
term          FLOPs
============  ===================================================================================
embedding     0 (lookup; RoPE models add no positional vector)
rmsnorm       T*(4d + 11): square d, sum d-1, mean 1, +eps 1, sqrt 10, divide d, gain d  (2 per layer)
q_proj        mm(T, d, h*dh) [+ T*h*dh bias]
k_proj/v_proj mm(T, d, hk*dh) [+ T*hk*dh bias] each
rope          3.5 per rotated element of q and the new k: x*cos + rotate_half(x)*sin, half negated
attn_scores   B*h * mm(q, dh, k)                       (Q K^T)
attn_scale    B*h*q*k                                   (divide by sqrt(dh); the constant is free)
attn_mask     B*h*q*k                                   (additive causal/padding mask)
softmax       B*h*q*(14k - 2): max k-1, subtract k, exp 10k, sum k-1, divide k
attn_values   B*h * mm(q, k, dh)                       (A V)
o_proj        mm(T, h*dh, d) [+ T*d bias]
residual      2*T*d                                     (two residual adds)
mlp_gate/up   mm(T, d, f) each
silu          13*T*f: x / (1 + exp(-x)) = neg, exp, add, div
mlp_mul       T*f                                       (gate * up)
mlp_down      mm(T, f, d)
lora          per target (a -> b), rank r: mm(T, a, r) + mm(T, r, b) + T*b (scale) + T*b (add)
============  ===================================================================================

Once per forward: final rmsnorm ``T*(4d+11)``; lm_head ``mm(Tl, d, V)`` [+ ``Tl*V`` bias] where
``Tl = T`` for training and ``B`` for generation (only the last position's logits are computed);
loss (training) ``T*(13V + 9) + T``: log-softmax (max V-1, sub V, exp 10V, sum V-1, log 10,
sub 1) and the mean. AdamW (training) costs 26 per trainable parameter per step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import LoraSpec
from ..errors import FlopcastError

ADAMW_PER_PARAM = 26  # m: 3, v: 4, bias corrections 2, sqrt 10, eps 1, div 1, lr 1, update 1, decay 3


@dataclass(frozen=True)
class Arch:
    """What the FLOP count needs from a model config."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    qkv_bias: bool = False
    o_bias: bool = False
    name: str = ""

    @classmethod
    def from_config(cls, cfg: Any, name: str = "") -> "Arch":
        """From a transformers config object or its dict (``config.json``)."""
        c = cfg if isinstance(cfg, dict) else cfg.to_dict()
        try:
            d, h = int(c["hidden_size"]), int(c["num_attention_heads"])
            family = c.get("model_type", "")
            attn_bias = bool(c.get("attention_bias", False))
            return cls(
                hidden=d, layers=int(c["num_hidden_layers"]), heads=h,
                kv_heads=int(c.get("num_key_value_heads") or h), head_dim=int(c.get("head_dim") or d // h),
                intermediate=int(c["intermediate_size"]), vocab=int(c["vocab_size"]),
                qkv_bias=family == "qwen2" or attn_bias, o_bias=attn_bias, name=name or family)
        except (TypeError, ValueError, ZeroDivisionError) as e:
            raise FlopcastError(f"model config {name!r}: a size is not a positive number ({e})") from None
        except KeyError as e:
            raise FlopcastError(f"model config lacks {e.args[0]!r}: only decoder-only Qwen2/Llama-style configs "
                                "are supported") from None


# Offline presets (numbers from the models' config.json files).
PRESETS: dict[str, Arch] = {
    "qwen2.5-0.5b": Arch(896, 24, 14, 2, 64, 4864, 151936, qkv_bias=True, name="Qwen2.5-0.5B-Instruct"),
    "smollm2-135m": Arch(576, 30, 9, 3, 64, 1536, 49152, name="SmolLM2-135M-Instruct"),
}
ALIASES = {"qwen/qwen2.5-0.5b-instruct": "qwen2.5-0.5b", "qwen2.5-0.5b-instruct": "qwen2.5-0.5b",
           "huggingfacetb/smollm2-135m-instruct": "smollm2-135m"}


def read_config(path: Path) -> dict[str, Any]:
    """A model's ``config.json`` as a dict; a damaged one is one line naming it."""
    try:
        cfg = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise FlopcastError(f"{path}: damaged model config ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise FlopcastError(f"{path}: damaged model config (a JSON object was expected)")
    return cfg


def arch_for(name_or_path: str) -> Arch:
    """Preset name/alias, a directory with config.json, or a config.json file."""
    key = ALIASES.get(name_or_path.lower(), name_or_path.lower())
    if key in PRESETS:
        return PRESETS[key]
    p = Path(name_or_path)
    if p.is_dir():
        p = p / "config.json"
    if p.is_file():
        return Arch.from_config(read_config(p), name=name_or_path)
    raise FlopcastError(f"unknown model {name_or_path!r} for FLOP counting: use one of {', '.join(PRESETS)}, "
                        "a tiny-* name, a model directory or a config.json")


@dataclass(frozen=True)
class LoraShape:
    rank: int
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    head_bias: bool = False


def lora_shape(spec: LoraSpec) -> LoraShape:
    """What the FLOP count needs from a LoRA configuration."""
    return LoraShape(spec.rank, tuple(spec.targets), spec.train_lm_head_bias)


@dataclass
class Breakdown:
    """FLOPs per component; ``total`` is their sum."""

    terms: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.terms[name] = self.terms.get(name, 0) + int(round(value))

    def scaled(self, factor: float) -> "Breakdown":
        return Breakdown({k: int(round(v * factor)) for k, v in self.terms.items()})

    def merge(self, other: "Breakdown") -> "Breakdown":
        out = Breakdown(dict(self.terms))
        for k, v in other.terms.items():
            out.add(k, v)
        return out

    @property
    def total(self) -> int:
        return sum(self.terms.values())

    def rows(self) -> list[dict]:
        t = self.total or 1
        return [{"component": k, "flops": v, "share %": 100 * v / t} for k, v in self.terms.items()]


def mm(m: float, n: float, p: float, matmul: str = "reference") -> float:
    """FLOPs of an (m x n)(n x p) matmul."""
    return m * p * (2 * n if matmul == "fma" else 2 * n - 1)


def _proj_dims(a: Arch, kv: int) -> dict[str, tuple[int, int]]:
    qd, kd = a.heads * a.head_dim, kv * a.head_dim
    return {"q_proj": (a.hidden, qd), "k_proj": (a.hidden, kd), "v_proj": (a.hidden, kd), "o_proj": (qd, a.hidden),
            "gate_proj": (a.hidden, a.intermediate), "up_proj": (a.hidden, a.intermediate),
            "down_proj": (a.intermediate, a.hidden)}


def forward(a: Arch, batch: int, q: int, k: int | None = None, lora: LoraShape | None = None,
            logits_tokens: int | None = None, loss: bool = False, gqa: str = "full",
            matmul: str = "reference") -> Breakdown:
    """One forward pass of ``batch`` sequences with ``q`` new tokens attending to ``k`` keys."""
    if gqa not in ("full", "actual"):
        raise FlopcastError(f"gqa must be 'full' or 'actual', got {gqa!r}")
    k = q if k is None else k
    B, d, h, dh, f, V, L = batch, a.hidden, a.heads, a.head_dim, a.intermediate, a.vocab, a.layers
    kv = h if gqa == "full" else a.kv_heads
    T = B * q
    dims = _proj_dims(a, kv)
    layer = Breakdown()
    layer.add("embedding", 0)
    layer.add("rmsnorm", 2 * T * (4 * d + 11))
    for name, bias in (("q_proj", a.qkv_bias), ("k_proj", a.qkv_bias), ("v_proj", a.qkv_bias), ("o_proj", a.o_bias)):
        i, o = dims[name]
        layer.add(name, mm(T, i, o, matmul) + (T * o if bias else 0))
    layer.add("rope", 3.5 * T * (h + kv) * dh)
    layer.add("attn_scores", B * h * mm(q, dh, k, matmul))
    layer.add("attn_scale", B * h * q * k)
    layer.add("attn_mask", B * h * q * k)
    layer.add("softmax", B * h * q * (14 * k - 2))
    layer.add("attn_values", B * h * mm(q, k, dh, matmul))
    layer.add("residual", 2 * T * d)
    layer.add("mlp_gate", mm(T, d, f, matmul))
    layer.add("mlp_up", mm(T, d, f, matmul))
    layer.add("silu", 13 * T * f)
    layer.add("mlp_mul", T * f)
    layer.add("mlp_down", mm(T, f, d, matmul))
    if lora is not None:
        lora_dims = _proj_dims(a, a.kv_heads)  # adapters are as wide as the real projections
        for t in lora.targets:
            if t not in lora_dims:
                raise FlopcastError(f"cannot count LoRA on {t!r}: known targets {', '.join(lora_dims)}")
            i, o = lora_dims[t]
            layer.add("lora", mm(T, i, lora.rank, matmul) + mm(T, lora.rank, o, matmul) + 2 * T * o)
    out = layer.scaled(L)
    Tl = T if logits_tokens is None else logits_tokens
    out.add("final_norm", T * (4 * d + 11))
    out.add("lm_head", mm(Tl, d, V, matmul) + (Tl * V if lora is not None and lora.head_bias else 0))
    if loss:
        out.add("loss", T * (13 * V + 9) + T)
    return out


def lora_params(a: Arch, lora: LoraShape) -> int:
    dims = _proj_dims(a, a.kv_heads)
    per_layer = sum(lora.rank * (dims[t][0] + dims[t][1]) for t in lora.targets)
    return a.layers * per_layer + (a.vocab if lora.head_bias else 0)


def train_step(a: Arch, batch: int, seq: int, lora: LoraShape | None, gqa: str = "full") -> Breakdown:
    """Forward with loss + backward (2x forward) + AdamW on the trainable parameters."""
    fwd = forward(a, batch, seq, lora=lora, loss=True, gqa=gqa)
    out = Breakdown(dict(fwd.terms))
    out.add("backward", 2 * fwd.total)
    if lora is not None:
        out.add("optimizer", ADAMW_PER_PARAM * lora_params(a, lora))
    return out


def prefill(a: Arch, batch: int, seq: int, lora: LoraShape | None = None, gqa: str = "full") -> Breakdown:
    """Prompt processing for generation: all positions, logits for the last one only."""
    return forward(a, batch, seq, lora=lora, logits_tokens=batch, gqa=gqa)


def generate(a: Arch, batch: int, prompt: int, new_tokens: int, lora: LoraShape | None = None,
             gqa: str = "full") -> Breakdown:
    """Prefill + KV-cached decoding: ``new_tokens`` tokens need ``new_tokens - 1`` decode steps."""
    out = prefill(a, batch, prompt, lora, gqa)
    for i in range(1, new_tokens):
        out = out.merge(forward(a, batch, 1, prompt + i, lora=lora, logits_tokens=batch, gqa=gqa))
    return out


def generate_total(a: Arch, batch: int, prompt: int, new_tokens: int, lora: LoraShape | None = None,
                   gqa: str = "full") -> int:
    """Total of :func:`generate` in O(1) terms of work (decode steps are affine in the key length)."""
    total = prefill(a, batch, prompt, lora, gqa).total
    n = new_tokens - 1
    if n <= 0:
        return total
    f0 = forward(a, batch, 1, prompt + 1, lora=lora, logits_tokens=batch, gqa=gqa).total
    f1 = forward(a, batch, 1, prompt + 2, lora=lora, logits_tokens=batch, gqa=gqa).total
    return total + n * f0 + (f1 - f0) * n * (n - 1) // 2

