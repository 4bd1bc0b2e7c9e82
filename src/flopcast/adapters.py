"""LoRA adapters (PEFT): attach one to a model, save it with its metadata, load it back.

A saved adapter directory holds PEFT's files, ``flopcast_adapter.json`` (base model, LoRA settings, codec state)
and, when the LM-head bias was trained, ``lm_head_bias.safetensors`` (not a PEFT weight). Its model card
(README.md) is written by :mod:`flopcast.card`.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

from .config import LoraSpec, from_dict, to_dict
from .errors import FlopcastError

ADAPTER_META = "flopcast_adapter.json"
LM_HEAD_BIAS_FILE = "lm_head_bias.safetensors"


def base_model(model):
    """The transformers model inside a PEFT wrapper (the model itself when it has none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _linear_names(model) -> list[str]:
    import torch

    return sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def add_lm_head_bias(model) -> None:
    """Give the LM head a zero-initialised fp32 bias (the reference study trains it); a head in lower precision
    becomes a :class:`~flopcast.heads.Fp32BiasHead`, so the bias trains in fp32 as the LoRA weights do."""
    import torch

    from .heads import Fp32BiasHead

    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is None:
        w = head.weight
        head.bias = torch.nn.Parameter(torch.zeros(w.shape[0], dtype=torch.float32, device=w.device))
        if w.dtype != torch.float32 and type(head) is torch.nn.Linear:
            head.__class__ = Fp32BiasHead


@contextmanager
def _peft_quietly():
    """PEFT (0.21) reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model, and
    transformers warns about it each time: PEFT's deprecation, not one a flopcast user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def attach_lora(model, lora: LoraSpec):
    """Wrap ``model`` in a PEFT LoRA model; only adapter weights (and the optional head bias) train."""
    from peft import LoraConfig, get_peft_model

    available = _linear_names(model)
    missing = [t for t in lora.targets if t not in available]
    if missing:
        raise FlopcastError(f"LoRA target(s) {missing} not in model; linear layers are: {', '.join(available)}")
    if lora.train_lm_head_bias:
        add_lm_head_bias(model)
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.lora_alpha, lora_dropout=lora.dropout,
                     target_modules=list(lora.targets), bias="none", task_type="CAUSAL_LM")
    with _peft_quietly():
        peft_model = get_peft_model(model, cfg)
    if lora.train_lm_head_bias:
        peft_model.get_output_embeddings().bias.requires_grad_(True)
    return peft_model


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_adapter(peft_model, directory: str | Path, lora: LoraSpec, base_name: str = "",
                 extra: dict | None = None) -> Path:
    """Save the adapter so ``PeftModel.from_pretrained(base, directory)`` loads it.

    The optional LM-head bias is not a PEFT weight: it goes to ``lm_head_bias.safetensors`` and
    :func:`load_adapter` restores it.
    """
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(d)
    if lora.train_lm_head_bias:
        bias = peft_model.get_output_embeddings().bias
        save_file({"lm_head.bias": bias.detach().cpu().contiguous()}, str(d / LM_HEAD_BIAS_FILE))
    meta = {"lora": to_dict(lora), "base_model": base_name, **(extra or {})}
    (d / ADAPTER_META).write_text(json.dumps(meta, indent=2))
    return d


def read_adapter_meta(directory: str | Path) -> dict:
    p = Path(directory) / ADAPTER_META
    return json.loads(p.read_text()) if p.is_file() else {}


def load_adapter(model, directory: str | Path, trainable: bool = False):
    """Load a saved adapter onto a base model (restoring the LM-head bias when present)."""
    from peft import PeftModel

    d = Path(directory)
    if not (d / "adapter_config.json").is_file():
        raise FlopcastError(f"{d}: not an adapter directory (no adapter_config.json)")
    if (d / LM_HEAD_BIAS_FILE).is_file():
        import torch
        from safetensors.torch import load_file

        add_lm_head_bias(model)
        bias = load_file(str(d / LM_HEAD_BIAS_FILE))["lm_head.bias"]
        head = model.get_output_embeddings()
        with torch.no_grad():
            head.bias.copy_(bias.to(head.bias.dtype))
    with _peft_quietly():
        pm = PeftModel.from_pretrained(model, d, is_trainable=trainable)
    return pm


def lora_from_adapter(directory: str | Path) -> LoraSpec | None:
    meta = read_adapter_meta(directory)
    return from_dict(LoraSpec, meta["lora"]) if "lora" in meta else None
