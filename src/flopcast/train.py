"""One readable LoRA training loop with FLOP accounting, checkpoints and resume.

Read :func:`train` top to bottom: set-up, then ``for step in ...``: budget check, batch, forward,
backward, clip, optimizer step, FLOPs, log, validate, checkpoint. It runs under Accelerate, so
``accelerate launch -m flopcast.cli train ...`` trains on several processes/GPUs (each process takes
its share of every global batch; the main process logs, checkpoints and writes the ledger).

A run directory holds::

    config.toml      resolved run configuration (model, LoRA, codec with alpha, training, data)
    metrics.jsonl    one line per step (loss, lr, flops) and per validation
    checkpoint/      adapter + state.pt (optimizer, RNG, step, FLOPs) for resuming
    adapter/         last adapter       adapter_best/  adapter with the lowest validation loss
    flops.json       FLOPs per step, steps done, total, ledger row
    status.json      done | stopped_budget | interrupted

SIGTERM (a scheduler's pre-emption, ``kill``, ``docker stop``) or Ctrl-C stops training at the end of
the step under way, with a checkpoint of that step; a second signal stops at once. Running the same
command again resumes.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import random
import shutil
import signal
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import flops as F
from .chunks import Chunks, make_chunks, series_token_ids
from .codec import LLMTimeCodec
from .config import LoraSpec, TrainConfig, to_dict
from .errors import FlopcastError, Interrupted
from .heads import numeric_head, remap_table, restricted_loss, target_ids
from .models import attach_lora, load_adapter, save_adapter, trainable_parameters


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    flops: int
    best_val_loss: float | None
    status: str
    wall_s: float


class StopRequest:
    """While active, SIGTERM and Ctrl-C ask the loop to stop after the step under way; a second one
    raises :class:`Interrupted` at once. Installs handlers in the main thread only, over any but an
    ignored one (a background job's SIGINT stays ignored), and puts the previous ones back on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._prev: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._prev[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._prev.items():
            signal.signal(sig, handler)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Warmup then constant / cosine / linear decay to 0."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else 1 - frac)


def _batch(chunks: Chunks, idx: np.ndarray, device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(getattr(chunks, k)[idx], device=device) for k in ("input_ids", "attention_mask", "labels")}


class BatchOrder:
    """Seeded epoch shuffles; its state (epoch, position) is checkpointed for exact resume."""

    def __init__(self, n: int, batch: int, seed: int, epoch: int = 0, pos: int = 0):
        self.n, self.batch, self.seed, self.epoch, self.pos = n, batch, seed, epoch, pos

    def _perm(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def next(self) -> np.ndarray:
        out = []
        while len(out) < self.batch:
            perm = self._perm()
            take = perm[self.pos:self.pos + self.batch - len(out)]
            out.extend(take.tolist())
            self.pos += len(take)
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return np.array(out)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}


def _log(fh, **row) -> None:
    fh.write(json.dumps(row) + "\n")
    fh.flush()


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


@torch.no_grad()
def validation_loss(model, chunks: Chunks | None, batch: int, acc, loss_fn=None) -> float | None:
    """Mean loss per target token; each process scores its share of every batch."""
    loss_fn = loss_fn or (lambda b: model(**b).loss)
    if chunks is None or len(chunks) == 0:
        return None
    was = model.training
    model.eval()
    tot = torch.zeros(2, dtype=torch.float64, device=acc.device)
    for i in range(0, len(chunks), batch):
        idx = np.arange(i, min(i + batch, len(chunks)))[acc.process_index::acc.num_processes]
        if len(idx) == 0:
            continue
        b = _batch(chunks, idx, acc.device)
        k = int((b["labels"][:, 1:] != -100).sum())
        tot += torch.tensor([float(loss_fn(b)) * k, k], dtype=torch.float64, device=acc.device)
    tot = acc.reduce(tot, reduction="sum")
    model.train(was)
    return float(tot[0] / max(float(tot[1]), 1.0))


def train(base_model, tokenizer, codec: LLMTimeCodec, train_series: list[np.ndarray], val_series: list[np.ndarray],
          lora: LoraSpec, cfg: TrainConfig, run_dir: str | Path, ledger=None, name: str = "train",
          model_name: str = "", init_adapter: str | Path | None = None, progress: bool = True,
          extra_config: dict | None = None, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train a LoRA adapter on ``train_series``; resumes from ``run_dir/checkpoint`` if present.

    ``on_step(step, loss)`` is called after every optimizer step (custom logging, tests).
    """
    from accelerate import Accelerator

    run = Path(run_dir)
    done = finished_run(run, lora, cfg)
    if done is not None:  # trained already: return its result, charge nothing again
        return done
    run.mkdir(parents=True, exist_ok=True)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    main = acc.is_main_process
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)

    # ---- data: every training token is a target once; validation uses the first chunks of val
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    chunks = make_chunks(series_token_ids(train_series, codec, tokenizer), cfg.seq_len, pad, cfg.stride)
    val = make_chunks(series_token_ids(val_series, codec, tokenizer), cfg.seq_len, pad, cfg.stride) if val_series else None
    if val is not None:
        k = min(len(val), cfg.val_batches * cfg.batch_size)
        val = Chunks(val.input_ids[:k], val.attention_mask[:k], val.labels[:k]) if k else None

    # ---- model + optimizer (resume restores adapter weights, optimizer, RNG, step, FLOPs)
    ckpt = run / "checkpoint"
    if main:
        _recover_checkpoint(run)
    acc.wait_for_everyone()
    resuming = (ckpt / "state.pt").is_file()
    if resuming:
        model = load_adapter(base_model, ckpt, trainable=True)
    elif init_adapter is not None:
        model = load_adapter(base_model, init_adapter, trainable=True)
    else:
        model = attach_lora(base_model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = torch.load(ckpt / "state.pt", weights_only=False) if resuming else None
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
    model, opt = acc.prepare(model, opt)
    device = acc.device
    world = acc.num_processes

    # ---- optional numeric head: logits and softmax over the series' tokens only (see heads.py)
    head_ids = target_ids(chunks.labels, *([] if val is None else [val.labels])) if cfg.head == "numeric" else None
    table = remap_table(head_ids, base_model.config.vocab_size, device) if head_ids else None

    def loss_of(b: dict[str, torch.Tensor]) -> torch.Tensor:
        return restricted_loss(model, b, table) if table is not None else model(**b).loss

    # ---- FLOPs: analytic per global step (padded tokens are computed, so they count)
    arch = F.Arch.from_config(base_model.config)
    if head_ids:
        arch = dataclasses.replace(arch, vocab=len(head_ids))
    shape = F.lora_shape(lora)
    per_step = F.train_step(arch, cfg.batch_size, cfg.seq_len, shape).total
    per_val = F.forward(arch, cfg.batch_size, cfg.seq_len, lora=shape, loss=True).total * math.ceil(len(val or []) / cfg.batch_size)
    step = state["step"] if state else 0
    used = state["flops"] if state else 0
    best = state["best_val"] if state else None
    order = BatchOrder(len(chunks), cfg.batch_size, cfg.seed, **(state["order"] if state else {}))
    n_val = cfg.steps // cfg.eval_every + 1
    planned = per_step * cfg.steps + per_val * n_val
    if cfg.max_flops is not None:
        planned = min(planned, int(cfg.max_flops))

    # ---- ledger: reserve once; a resumed run continues its row, so nothing is counted twice
    row = None
    if ledger is not None and main:
        prev = ledger.resume(name)
        row = prev.id if prev is not None else ledger.reserve(
            name, "train", planned, model=model_name, seq=cfg.seq_len, batch=cfg.batch_size, rank=lora.rank,
            steps=cfg.steps, info={"lr": cfg.lr, "run_dir": str(run)})
    if main:
        from .config import save_toml

        save_toml({"name": name, "model": model_name, "lora": to_dict(lora), "train": to_dict(cfg),
                   "codec": codec.state(), "seed": cfg.seed,
                   "chunks": {"train": len(chunks), "val": len(val or []), "train_targets": chunks.n_targets},
                   "trainable_parameters": trainable_parameters(model),
                   **({"head_token_ids": head_ids} if head_ids else {}), **(extra_config or {})}, run / "config.toml")
    if main and state is not None:
        _truncate_log(run / "metrics.jsonl", step)  # steps after the checkpoint are redone
    log = (run / "metrics.jsonl").open("a") if main else None
    tracker = _wandb(cfg, name, run) if main else None
    meta = {"codec": codec.state()}

    def save(directory: Path) -> None:
        save_adapter(acc.unwrap_model(model), directory, lora, model_name, meta)

    def checkpoint() -> None:
        if not main:
            return
        tmp = run / "checkpoint.tmp"
        save(tmp)
        torch.save({"optimizer": opt.state_dict(), "rng": _rng_state(), "step": step, "flops": used,
                    "best_val": best, "order": order.state()}, tmp / "state.pt.part")
        (tmp / "state.pt.part").rename(tmp / "state.pt")  # so a state.pt is always a complete one
        old = run / "checkpoint.old"
        shutil.rmtree(old, ignore_errors=True)
        if ckpt.exists():
            ckpt.rename(old)
        tmp.rename(ckpt)  # at every moment a complete checkpoint exists (checkpoint/ or checkpoint.old/)
        shutil.rmtree(old, ignore_errors=True)
        if row is not None:
            ledger.progress(row, used, wall_s=time.time() - t0 + wall_before, steps=step)

    # ---- the loop
    t0, wall_before = time.time(), (state or {}).get("wall", 0.0)
    status = "done"
    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=name, unit="step", disable=None)  # off without a terminal
    head_ctx = numeric_head(acc.unwrap_model(model), head_ids) if head_ids else nullcontext()
    head_ctx.__enter__()
    stop = StopRequest().__enter__()
    before = None
    try:
        while step < cfg.steps:
            if _stop_requested(stop, acc):  # every process stops at the same step
                status = "interrupted"
                break
            val_due = (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps
            if cfg.max_flops is not None and used + per_step + (per_val if val_due else 0) > cfg.max_flops:
                status = "stopped_budget"
                break
            before = order.state()  # put back if a second signal cuts this step short
            idx = order.next()
            shard = idx[acc.process_index::world]  # each process takes its share of the global batch
            lr = lr_at(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = loss_of(_batch(chunks, shard, device))
            acc.backward(loss)
            if cfg.grad_clip:
                acc.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step, used, before = step + 1, used + per_step, None
            loss_v = float(acc.reduce(loss.detach(), reduction="mean"))
            if main:
                _log(log, step=step, loss=loss_v, lr=lr, flops=used, time=time.time() - t0 + wall_before)
                if tracker:
                    tracker.log({"loss": loss_v, "lr": lr, "flops": used}, step=step)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                v = validation_loss(model, val, cfg.batch_size, acc, loss_of)
                if v is not None:
                    used += per_val
                    if main:
                        _log(log, step=step, val_loss=v, flops=used)
                        if tracker:
                            tracker.log({"val_loss": v}, step=step)
                        if best is None or v < best:
                            best = v
                            save(run / "adapter_best")
            if step % cfg.checkpoint_every == 0:
                checkpoint()
            if bar:
                bar.set_postfix(loss=f"{loss_v:.4f}", flops=f"{used:.2e}")
                bar.update(1)
            if on_step:
                on_step(step, loss_v)
    except KeyboardInterrupt as e:  # a second signal, or a Ctrl-C that StopRequest could not catch
        status = "interrupted"
        stop.signum = getattr(e, "signum", stop.signum or signal.SIGINT)
        if before is not None:  # cut short before its update: the resumed run takes the same batch again
            order.epoch, order.pos = before["epoch"], before["pos"]
    finally:
        stop.__exit__()  # signals act normally again
        head_ctx.__exit__(None, None, None)  # the shared base model gets its full head back
        if bar:
            bar.close()
    checkpoint()
    wall = time.time() - t0 + wall_before
    if main:
        save(run / "adapter")
        if best is None:
            save(run / "adapter_best")
        (run / "flops.json").write_text(json.dumps({"per_step": per_step, "per_validation": per_val, "steps": step,
                                                    "total": used, "planned": planned, "ledger_id": row}, indent=2))
        (run / "status.json").write_text(json.dumps({"status": status, "steps": step, "flops": used, "best_val_loss": best,
                                                     "wall_s": wall}))
        if row is not None and status != "interrupted":
            ledger.settle(row, used, wall_s=wall, steps=step, info={"best_val_loss": best, "status": status})
        log.close()
        if tracker:
            tracker.finish()
    acc.wait_for_everyone()  # no process returns before the main one has written the adapter
    if world > 1:  # a gloo group left to interpreter shutdown can abort a process; close it at exit, once
        atexit.unregister(_destroy_process_group)
        atexit.register(_destroy_process_group)
    if stop.signum is not None:  # stopped (or finished during the step the signal arrived in): the caller stops too
        if main:
            print(f"{name}: stopped by {signal.Signals(stop.signum).name} after step {step} ({status}); checkpoint "
                  "saved, running the same command again resumes", file=sys.stderr)
        raise Interrupted(stop.signum)
    return TrainResult(run, step, used, best, status, wall)


def finished_run(run_dir: str | Path, lora: LoraSpec | None = None, cfg: TrainConfig | None = None) -> TrainResult | None:
    """The result of a run directory whose training finished (``done`` or ``stopped_budget``), else None.

    With ``lora``/``cfg``, a finished run with other settings is an error rather than a result.
    """
    run = Path(run_dir)
    if not (run / "status.json").is_file():
        return None
    st = json.loads((run / "status.json").read_text())
    if st.get("status") not in ("done", "stopped_budget"):
        return None
    if cfg is not None or lora is not None:
        from .config import load_toml

        saved = load_toml(run / "config.toml")
        for key, want in (("train", cfg), ("lora", lora)):
            mine, theirs = (to_dict(want) if want is not None else None), saved.get(key, {})
            if mine is not None and theirs != mine:
                diff = sorted(k for k in {*theirs, *mine} if theirs.get(k) != mine.get(k))
                raise FlopcastError(f"{run}: holds a finished run with other {key} settings ({', '.join(diff)}); "
                                    "choose another output directory or delete this one")
    flops = st["flops"] if "flops" in st else json.loads((run / "flops.json").read_text())["total"]
    best = st.get("best_val_loss")
    if "best_val_loss" not in st and (run / "metrics.jsonl").is_file():  # status.json of an older flopcast
        vals = [r["val_loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "val_loss" in r]
        best = min(vals) if vals else None
    return TrainResult(run, st["steps"], flops, best, st["status"], st["wall_s"])


def _stop_requested(stop: StopRequest, acc) -> bool:
    """True when a signal arrived in any process (one all-reduce per step when there are several)."""
    if acc.num_processes == 1:
        return stop.signum is not None
    flag = acc.reduce(torch.tensor([0.0 if stop.signum is None else float(stop.signum)], device=acc.device), reduction="sum")
    if stop.signum is None and float(flag) > 0:
        stop.signum = signal.SIGTERM  # another process got the signal
    return float(flag) > 0


def _destroy_process_group() -> None:
    """At exit under ``accelerate launch``: destroy the process group before the interpreter does
    ("terminate called without an active exception" otherwise). Later ``train`` calls in the same
    process keep the group until then."""
    from accelerate import PartialState

    PartialState().destroy_process_group()


def _recover_checkpoint(run: Path) -> None:
    """Finish a checkpoint swap cut short: keep the newest complete checkpoint as ``checkpoint/``."""
    ckpt, old, tmp = run / "checkpoint", run / "checkpoint.old", run / "checkpoint.tmp"
    if not (ckpt / "state.pt").is_file():
        for cand in (tmp, old):  # a checkpoint with state.pt is complete (state.pt is renamed into place last)
            if (cand / "state.pt").is_file():
                shutil.rmtree(ckpt, ignore_errors=True)
                cand.rename(ckpt)
                break
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _truncate_log(path: Path, step: int) -> None:
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


def _wandb(cfg: TrainConfig, name: str, run: Path):
    """A wandb run when wandb is installed (offline unless an API key is configured)."""
    if not cfg.wandb:
        return None
    try:
        import wandb
    except ImportError:
        return None
    import os

    mode = "online" if os.environ.get("WANDB_API_KEY") or (Path.home() / ".netrc").exists() else "offline"
    return wandb.init(project="flopcast", name=name, dir=str(run), mode=os.environ.get("WANDB_MODE", mode),
                      config=to_dict(cfg), reinit=True)
