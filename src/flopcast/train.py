"""One readable LoRA training engine with FLOP accounting, checkpoints and resume.

Read it top to bottom: :func:`train` is :func:`setup` (data, model, optimizer, resume, ledger row)
-> :func:`fit` (the loop: stop and budget checks, :func:`train_step`, FLOPs, log, validation,
checkpoint) -> :func:`finalize` (adapters, ``flops.json``, ``status.json``, ledger settlement).
It runs under Accelerate, so ``accelerate launch`` trains on several processes/GPUs (each process
takes its share of every global batch; the main process logs, checkpoints and writes the ledger).
PEFT wraps the base model in place: after training, ``base_model`` carries the LoRA layers.

A run directory holds::

    config.toml      resolved run configuration (model, LoRA, codec with alpha, training, data hash, fingerprint)
    metrics.jsonl    one line per step (loss, lr, flops, time) and per validation
    checkpoint/      adapter + state.pt (optimizer, RNG, TrainState), see flopcast.checkpoint
    adapter/         last adapter       adapter_best/  adapter with the lowest validation loss
    flops.json       FLOPs per step and per validation, steps done, total, redone, ledger row
    status.json      done | stopped_budget | interrupted | diverged

The ledger hears of every step, so a run killed with ``kill -9`` has charged all the work it did;
when it resumes from its last checkpoint, the steps it does again are charged again
(``flops_redone``). SIGTERM or Ctrl-C stops at the end of the step under way, with a checkpoint of
that step; a second signal stops at once. Running the same command again resumes. A loss that
becomes NaN or infinite stops the run with status ``diverged``.
"""

from __future__ import annotations

import atexit
import json
import math
import random
import signal
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .accel import (
    compile_body,
    compile_on,
    destroy_process_group,
    graphs_on,
    largest_batch,
    stop_requested,
    sync_every,
    uncompile_body,
)
from .adapters import attach_lora, load_adapter, save_adapter, trainable_parameters
from .card import write_card
from .checkpoint import CheckpointManager, TrainState, set_rng_state
from .chunks import Chunks, make_chunks, series_token_ids
from .codec import LLMTimeCodec
from .config import LoraSpec, TrainConfig, save_toml, to_dict
from .costs import RunCost, run_cost, val_chunks_used
from .errors import FlopcastError, Interrupted
from .flops import Arch, lora_shape
from .heads import head_ids_for, lm_loss, numeric_head, remap_table
from .lock import DirLock
from .rundir import TrainResult, finished_run, run_fingerprint, series_sha256, truncate_log, wandb_run
from .signals import StopRequest
from .steps import BatchOrder, lr_at, make_batch, make_optimizer, on_device, train_step, validation_loss


@dataclass
class Run:
    """What :func:`setup` builds for :func:`fit` and :func:`finalize`."""

    dir: Path
    name: str
    model_name: str
    cfg: TrainConfig
    lora: LoraSpec
    acc: Any
    model: Any
    opt: torch.optim.Optimizer
    params: list
    chunks: Chunks
    val: Chunks | None
    loss_fn: Callable[[dict], torch.Tensor]
    head_ids: list[int] | None
    cost: RunCost
    state: TrainState
    order: BatchOrder
    ckpt: CheckpointManager
    codec_state: dict
    ledger: Any = None
    log: Any = None
    tracker: Any = None
    wall0: float = 0.0
    t0: float = 0.0
    sync_every: int = 1          # steps between reads of the loss from the device
    skip: torch.Tensor | None = None  # set on the device by a non-finite loss: later updates are skipped
    pending: list = field(default_factory=list)  # (step, lr, flops, time, loss on the device) not read yet

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    def wall(self) -> float:
        """Seconds of training so far, over every process that worked on this run."""
        return self.wall0 + time.time() - self.t0


# ----------------------------------------------------------------------------- the engine

def train(base_model, tokenizer, codec: LLMTimeCodec, train_series: list[np.ndarray], val_series: list[np.ndarray],
          lora: LoraSpec, cfg: TrainConfig, run_dir: str | Path, ledger=None, name: str = "train",
          model_name: str = "", progress: bool = True,
          on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train a LoRA adapter on ``train_series``; resumes from ``run_dir/checkpoint`` if present.

    A finished run with the same settings is returned as it is (nothing is charged again); one with
    other settings is an error. ``on_step(step, loss)`` is called for every optimizer step, once its loss has
    been read from the device (every ``train.sync_every`` steps).
    """
    from accelerate import Accelerator

    data_sha = series_sha256(train_series, val_series)
    done = finished_run(run_dir, lora, cfg, data_sha)
    if done is not None:
        return done
    acc = Accelerator(cpu=not torch.cuda.is_available())
    with ExitStack() as resources:
        if acc.is_main_process:
            resources.enter_context(DirLock(run_dir))  # a second process on this run directory stops here
        run = setup(acc, base_model, tokenizer, codec, train_series, val_series, lora, cfg, run_dir, ledger, name,
                    model_name, data_sha)
        resources.callback(_close, run)
        if compile_on(cfg.compile, acc.device):  # the body of the shared base model, given back as it came
            compile_body(acc.unwrap_model(run.model), graphs_on(cfg.compile, acc.device))
            resources.callback(uncompile_body, acc.unwrap_model(run.model))
        with ExitStack() as loop:
            if run.head_ids:  # the shared base model gets its full head back on the way out
                loop.enter_context(numeric_head(acc.unwrap_model(run.model), run.head_ids))
            stop = loop.enter_context(StopRequest())
            bar = loop.enter_context(_progress_bar(run) if progress and run.main else nullcontext())
            try:
                status = fit(run, stop, bar, on_step)
            except KeyboardInterrupt as e:  # a second signal, or a Ctrl-C that StopRequest could not catch
                status, stop.signum = "interrupted", getattr(e, "signum", stop.signum or signal.SIGINT)
        return finalize(run, status, stop.signum)


def setup(acc, base_model, tokenizer, codec: LLMTimeCodec, train_series, val_series, lora: LoraSpec, cfg: TrainConfig,
          run_dir: str | Path, ledger, name: str, model_name: str, data_sha: str = "") -> Run:
    """Data, model, optimizer and state (restored from the checkpoint when there is one), ledger row, config file."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    chunks, val = _chunks(tokenizer, codec, train_series, val_series, cfg)
    ckpt = CheckpointManager(run_dir)
    if acc.is_main_process:
        ckpt.recover()
    acc.wait_for_everyone()
    model, opt, state = _model_and_optimizer(base_model, lora, cfg, ckpt)
    params = [p for p in model.parameters() if p.requires_grad]
    model, opt = acc.prepare(model, opt)
    head_ids = None
    if cfg.head == "numeric":
        head_ids = head_ids_for(tokenizer, codec.config, chunks.labels, *([] if val is None else [val.labels]))
    cost = run_cost(Arch.from_config(base_model.config), cfg, lora_shape(lora), len(val or []),
                    len(head_ids) if head_ids else None)
    run = Run(Path(run_dir), name, model_name, cfg, lora, acc, model, opt, params, on_device(chunks, acc.device),
              on_device(val, acc.device), _loss_fn(model, head_ids, base_model.config.vocab_size, acc.device),
              head_ids, cost, state, BatchOrder(len(chunks), cfg.batch_size, cfg.seed, **state.order), ckpt,
              codec.state(), ledger, wall0=state.wall, t0=time.time(), sync_every=sync_every(cfg, acc.device),
              skip=torch.zeros((), dtype=torch.bool, device=acc.device))
    if run.main:
        _ledger_row(run, ledger)
        _write_config(run, data_sha, trainable_parameters(model))
        truncate_log(run.dir / "metrics.jsonl", state.step)  # steps after the checkpoint are redone
        run.log = (run.dir / "metrics.jsonl").open("a")
        run.tracker = wandb_run(cfg, name, run.dir)
    return run


def fit(run: Run, stop: StopRequest, bar=None, on_step: Callable[[int, float], None] | None = None) -> str:
    """The training loop; returns the status it ended with. Losses stay on the device and are read every
    ``run.sync_every`` steps (and before a validation or checkpoint): each read waits for the device."""
    cfg, st, acc = run.cfg, run.state, run.acc
    while st.step < cfg.steps:
        if stop_requested(stop, acc, st.step % run.sync_every == 0):  # every process stops at the same step
            return "diverged" if _read_losses(run, bar, on_step) else "interrupted"
        val_due = (st.step + 1) % cfg.eval_every == 0 or st.step + 1 == cfg.steps
        next_cost = run.cost.per_step + (run.cost.per_val if val_due else 0)
        if cfg.max_flops is not None and st.charged + next_cost > cfg.max_flops:
            return "diverged" if _read_losses(run, bar, on_step) else "stopped_budget"
        before, lr = run.order.state(), lr_at(st.step, cfg)
        shard = run.order.next()[acc.process_index::acc.num_processes]  # each process takes its share
        batch = make_batch(run.chunks, shard, acc.device)
        try:
            loss = train_step(run.model, run.opt, batch, run.loss_fn, lr, cfg.grad_clip, acc, run.params, run.skip)
        except KeyboardInterrupt:  # cut short before its update: the resumed run takes the same batch again
            run.order.epoch, run.order.pos = before["epoch"], before["pos"]
            raise
        except torch.OutOfMemoryError:
            raise _out_of_memory(run, batch) from None
        st.step, st.flops = st.step + 1, st.flops + run.cost.per_step
        run.pending.append((st.step, lr, st.charged, run.wall(), loss))
        if run.main and run.ledger is not None:  # one UPDATE a step: a killed run has charged all its work
            run.ledger.progress(st.ledger_id, st.charged, wall_s=run.wall(), steps=st.step)
        if bar is not None:
            bar.update(1)
        checkpoint_due = st.step % cfg.checkpoint_every == 0
        if (len(run.pending) >= run.sync_every or val_due or checkpoint_due) and _read_losses(run, bar, on_step):
            return "diverged"
        if val_due:
            _validate(run)
        if checkpoint_due:
            _checkpoint(run)
    return "diverged" if _read_losses(run, bar, on_step) else "done"


def _read_losses(run: Run, bar, on_step) -> bool:
    """Read the losses of the steps since the last read (one wait for the device), log them, call ``on_step``;
    True when one is not finite (the run diverged there: its later steps were skipped on the device)."""
    if not run.pending:
        return False
    rows, run.pending = run.pending, []
    losses = torch.stack([r[-1] for r in rows]).tolist()
    for (step, lr, flops, t, _), loss in zip(rows, losses):
        _log(run, step=step, loss=loss, lr=lr, flops=flops, time=t)
        if on_step:
            on_step(step, loss)
    if bar is not None:
        bar.set_postfix(loss=f"{losses[-1]:.4f}", flops=f"{rows[-1][2]:.2e}")
    return not all(math.isfinite(v) for v in losses)


def _out_of_memory(run: Run, batch: dict) -> FlopcastError:
    """One line naming the largest batch that fits (probed by halving it); the failed step and every probe
    are charged at their full size: the ledger never undercounts."""
    st, B, S = run.state, *batch["input_ids"].shape
    fits, probed = largest_batch(run.loss_fn, batch, lambda: run.opt.zero_grad(set_to_none=True))
    run.opt.zero_grad(set_to_none=True)
    st.flops_redone += run.cost.per_step + sum(run.cost.per_step * b // B for b in probed)
    fits *= run.acc.num_processes
    if run.main and run.ledger is not None:
        run.ledger.settle(st.ledger_id, st.charged, status="failed", wall_s=run.wall(), steps=st.step)
    hint = (f"batch_size {fits} fits (probed); set train.batch_size = {fits}" if fits else
            "not even batch_size 1 fits; lower train.seq_len")
    return FlopcastError(f"out of memory in a training step at batch_size {run.cfg.batch_size}, seq_len {S} on "
                         f"{run.acc.device}: {hint}")


def finalize(run: Run, status: str, signum: int | None) -> TrainResult:
    """Last checkpoint, adapters, flops.json and status.json, ledger settlement; raises Interrupted after a signal."""
    st = run.state
    _read_losses(run, None, None)  # steps a second signal cut short of their read are logged too
    _checkpoint(run)
    wall = run.wall()
    if run.main:
        _save(run, run.dir / "adapter")
        if st.best_val is None:
            _save(run, run.dir / "adapter_best")
        (run.dir / "flops.json").write_text(json.dumps({
            "per_step": run.cost.per_step, "per_validation": run.cost.per_val, "steps": st.step, "total": st.charged,
            "redone": st.flops_redone, "planned": run.cost.planned, "ledger_id": st.ledger_id}, indent=2))
        (run.dir / "status.json").write_text(json.dumps({"status": status, "steps": st.step, "flops": st.charged,
                                                         "best_val_loss": st.best_val, "wall_s": wall}))
        for adapter in ("adapter", "adapter_best"):
            if (run.dir / adapter).is_dir():
                write_card(run.dir / adapter, run.dir)
        if run.ledger is not None:
            run.ledger.settle(st.ledger_id, st.charged, status=status if status != "stopped_budget" else "done",
                              wall_s=wall, steps=st.step, info={"best_val_loss": st.best_val, "status": status})
    run.acc.wait_for_everyone()  # no process returns before the main one has written the adapter
    # a gloo group left to interpreter shutdown can abort a process: close it at exit, once
    if run.acc.num_processes > 1:
        atexit.unregister(destroy_process_group)
        atexit.register(destroy_process_group)
    if signum is not None:  # stopped (or finished during the step the signal arrived in): the caller stops too
        if run.main:
            print(f"{run.name}: stopped by {signal.Signals(signum).name} after step {st.step} ({status}); checkpoint "
                  "saved, running the same command again resumes", file=sys.stderr)
        raise Interrupted(signum)
    return TrainResult(run.dir, st.step, st.charged, st.best_val, status, wall, st.flops_redone)


# ----------------------------------------------------------------------------- setup helpers

def _chunks(tokenizer, codec: LLMTimeCodec, train_series, val_series, cfg: TrainConfig) -> tuple[Chunks, Chunks | None]:
    """Training chunks (every token a target once) and the first validation chunks."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    chunks = make_chunks(series_token_ids(train_series, codec, tokenizer), cfg.seq_len, pad, cfg.stride)
    if not val_series:
        return chunks, None
    val = make_chunks(series_token_ids(val_series, codec, tokenizer), cfg.seq_len, pad, cfg.stride)
    k = val_chunks_used(len(val), cfg)
    return chunks, (Chunks(val.input_ids[:k], val.attention_mask[:k], val.labels[:k]) if k else None)


def _model_and_optimizer(base_model, lora: LoraSpec, cfg: TrainConfig, ckpt: CheckpointManager):
    """The LoRA model and AdamW, restored from the checkpoint (adapter, optimizer, RNG, state) if there is one."""
    resuming = ckpt.exists()
    model = load_adapter(base_model, ckpt.dir, trainable=True) if resuming else attach_lora(base_model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg.lr, cfg.weight_decay)
    state = TrainState()
    if resuming:
        state, opt_state, rng = ckpt.load()
        opt.load_state_dict(opt_state)
        set_rng_state(rng)
    return model, opt, state


def _loss_fn(model, head_ids: list[int] | None, vocab: int, device) -> Callable[[dict], torch.Tensor]:
    """The model's own loss, or the numeric head's restricted loss (logits over the series' tokens only)."""
    table = remap_table(head_ids, vocab, device) if head_ids else None
    return lambda b: lm_loss(model, b, table)


def _ledger_row(run: Run, ledger) -> None:
    """Continue the run's own ledger row when resuming (charging again what the kill made us redo), else reserve one."""
    if ledger is None:
        return
    st, entry = run.state, None
    if st.ledger_id is not None:
        entry = ledger.adopt(st.ledger_id)
    elif st.step > 0:  # a checkpoint of an older flopcast: find the row by name
        prev = ledger.resume(run.name)
        entry = ledger.adopt(prev.id) if prev is not None else None
    if entry is not None:
        st.flops_redone += max(0, entry.flops_used - st.charged)  # steps after the checkpoint ran, and will run again
        st.ledger_id = entry.id
    else:
        st.ledger_id = ledger.reserve(run.name, "train", run.cost.planned, model=run.model_name, seq=run.cfg.seq_len,
                                      batch=run.cfg.batch_size, rank=run.lora.rank, steps=run.cfg.steps,
                                      info={"lr": run.cfg.lr, "run_dir": str(run.dir)})
        ledger.progress(st.ledger_id, st.charged, steps=st.step)


def _write_config(run: Run, data_sha: str, n_trainable: int) -> None:
    save_toml({"name": run.name, "model": run.model_name, "lora": to_dict(run.lora), "train": to_dict(run.cfg),
               "codec": run.codec_state, "seed": run.cfg.seed, "data_sha256": data_sha,
               "fingerprint": run_fingerprint(run.model_name, run.lora, run.cfg, run.codec_state, data_sha),
               "chunks": {"train": len(run.chunks), "val": len(run.val or []), "train_targets": run.chunks.n_targets},
               "trainable_parameters": n_trainable, **({"head_token_ids": run.head_ids} if run.head_ids else {})},
              run.dir / "config.toml")


def _progress_bar(run: Run):
    from tqdm.auto import tqdm

    return tqdm(total=run.cfg.steps, initial=run.state.step, desc=run.name, unit="step",
                disable=None)  # off without a terminal


# ----------------------------------------------------------------------------- loop helpers

def _log(run: Run, **row) -> None:
    if run.main:
        run.log.write(json.dumps(row) + "\n")
        run.log.flush()
        if run.tracker:
            run.tracker.log({k: v for k, v in row.items() if k not in ("step", "time")}, step=row["step"])


def _validate(run: Run) -> None:
    st = run.state
    v = validation_loss(run.model, run.val, run.cfg.batch_size, run.acc, run.loss_fn)
    if v is None:
        return
    st.flops += run.cost.per_val
    _log(run, step=st.step, val_loss=v, flops=st.charged)
    if run.main and (st.best_val is None or v < st.best_val):
        st.best_val = v
        _save(run, run.dir / "adapter_best")


def _save(run: Run, directory: Path) -> None:
    save_adapter(run.acc.unwrap_model(run.model), directory, run.lora, run.model_name, {"codec": run.codec_state})


def _checkpoint(run: Run) -> None:
    if not run.main:
        return
    run.state.order, run.state.wall = run.order.state(), run.wall()
    run.ckpt.save(lambda d: _save(run, d), run.opt, run.state)
    if run.ledger is not None:
        run.ledger.progress(run.state.ledger_id, run.state.charged, wall_s=run.state.wall, steps=run.state.step)


def _close(run: Run) -> None:
    if run.log is not None:
        run.log.close()
    if run.tracker:
        run.tracker.finish()
