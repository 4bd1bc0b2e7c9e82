"""Finding the parts of a causal LM that flopcast works on, whether or not PEFT has wrapped it.

PEFT wraps a transformers model (``PeftModel``), and multimodal configs nest the language model's. Every place that
needs the transformers model itself, its body, its decoder layers or its language config asks here, so the
unwrapping is written once.
Nothing here imports torch: the functions read attributes of the model they are given.
"""

from __future__ import annotations

from typing import Any


def base_model(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (the model itself when it has none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def body(model: Any) -> Any:
    """The transformer body (embeddings and decoder layers, no LM head): ``model.model`` for Qwen2 and Llama."""
    causal = base_model(model)
    return getattr(causal, causal.base_model_prefix)


def decoder_layers(model: Any) -> list[Any]:
    """The body's repeated blocks: the classes transformers keeps whole on one device (``_no_split_modules``)."""
    names = set(getattr(base_model(model), "_no_split_modules", None) or ())
    return [m for m in body(model).modules() if type(m).__name__ in names]


def text_config(config: Any) -> Any:
    """The language model's part of a model config (a multimodal config nests it), else the config itself."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def max_positions(model: Any) -> int | None:
    """The most positions (prompt + generated tokens) the model was built for, when its config says."""
    config = getattr(base_model(model), "config", None)
    n = getattr(text_config(config), "max_position_embeddings", None) if config is not None else None
    return int(n) if isinstance(n, int) and n > 0 else None
