"""LoRA adapters (PEFT): attach one to a model, save it with its metadata, load it back (checked first by
:mod:`~flopcast.model.adapter_files`).

A saved adapter directory holds PEFT's files, ``flopcast_adapter.json`` (base model, LoRA settings, codec state)
and, when the LM-head bias was trained, ``lm_head_bias.safetensors`` (not a PEFT weight). Its model card
(README.md) is written by :mod:`flopcast.training.card`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from ..config import LoraSpec, from_dict, to_dict
from ..errors import FlopcastError
from .adapter_files import ADAPTER_META, check_adapter, read_adapter_meta
from .heads import Fp32BiasHead
from .load import LoadedModel, load_model

LM_HEAD_BIAS_FILE = "lm_head_bias.safetensors"


def linear_names(model: torch.nn.Module) -> list[str]:
    """The distinct names of the model's linear layers (``q_proj``, ``v_proj``, ...): what LoRA can target."""
    return sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def add_lm_head_bias(model: Any) -> None:
    """Give the LM head a zero-initialised fp32 bias (the reference study trains it); a head in lower precision
    becomes a :class:`~flopcast.model.heads.Fp32BiasHead`, so the bias trains in fp32 as the LoRA weights do."""
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is None:
        w = head.weight
        head.bias = torch.nn.Parameter(torch.zeros(w.shape[0], dtype=torch.float32, device=w.device))
        if w.dtype != torch.float32 and type(head) is torch.nn.Linear:
            head.__class__ = Fp32BiasHead


@contextmanager
def _peft_quietly() -> Iterator[None]:
    """PEFT reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model, and transformers
    warns about it each time: PEFT's deprecation, not one a flopcast user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def attach_lora(model: Any, lora: LoraSpec) -> Any:
    """Wrap ``model`` in a PEFT LoRA model; only adapter weights (and the optional head bias) train."""
    available = linear_names(model)
    missing = [t for t in lora.targets if t not in available]
    if missing:
        raise FlopcastError(f"LoRA target(s) {missing} not in model; linear layers are: {', '.join(available)}")
    if lora.train_lm_head_bias:
        add_lm_head_bias(model)
    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.lora_alpha,  # type: ignore[arg-type]  # a float is fine lora_dropout=lora.dropout,
                     target_modules=list(lora.targets), bias="none", task_type="CAUSAL_LM")
    with _peft_quietly():
        peft_model = get_peft_model(model, cfg)
    if lora.train_lm_head_bias:
        peft_model.get_output_embeddings().bias.requires_grad_(True)
    return peft_model


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_adapter(peft_model: Any, directory: str | Path, lora: LoraSpec, base_name: str = "",
                 extra: dict[str, Any] | None = None) -> Path:
    """Save the adapter so ``PeftModel.from_pretrained(base, directory)`` loads it.

    The optional LM-head bias is not a PEFT weight: it goes to ``lm_head_bias.safetensors`` and
    :func:`load_adapter` restores it.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(d)
    if lora.train_lm_head_bias:
        bias = peft_model.get_output_embeddings().bias
        save_file({"lm_head.bias": bias.detach().cpu().contiguous()}, str(d / LM_HEAD_BIAS_FILE))
    meta = {"lora": to_dict(lora), "base_model": base_name, **(extra or {})}
    (d / ADAPTER_META).write_text(json.dumps(meta, indent=2))
    return d


def load_adapter(model: Any, directory: str | Path, trainable: bool = False) -> Any:
    """Load a saved adapter onto a base model (restoring the LM-head bias when present)."""
    d = Path(directory)
    check_adapter(d)
    if (d / LM_HEAD_BIAS_FILE).is_file():
        add_lm_head_bias(model)
        bias = load_file(str(d / LM_HEAD_BIAS_FILE))["lm_head.bias"]
        head = model.get_output_embeddings()
        with torch.no_grad():
            head.bias.copy_(bias.to(head.bias.dtype))
    with _peft_quietly():
        return PeftModel.from_pretrained(model, d, is_trainable=trainable)


def lora_from_adapter(directory: str | Path) -> LoraSpec | None:
    """The LoRA settings an adapter was saved with (None for an adapter without flopcast's metadata)."""
    meta = read_adapter_meta(directory)
    return from_dict(LoraSpec, meta["lora"]) if "lora" in meta else None


def load_for_inference(spec: Any, adapter: str | Path | None = None) -> LoadedModel:
    """A base model (a :class:`~flopcast.config.ModelSpec` or a name) plus, optionally, a saved adapter, in eval
    mode."""
    lm = load_model(spec)
    if adapter is not None:
        lm.model = load_adapter(lm.model, adapter).eval()
    return lm
