"""One LoRA training engine with FLOP accounting, checkpoints and resume. Read it top to bottom:

:func:`train` runs three phases on a :class:`RunSpec` (what to train, on what, where):

1. :func:`setup` -- seeds, data chunks, the LoRA model and fused AdamW (restored from the run's checkpoint when
   there is one), Accelerate, the run's FLOP cost, its ledger row, ``config.toml`` and ``metrics.jsonl``;
2. :func:`fit` -- the loop: a stop or the FLOP cap ends it; each step takes a batch, runs
   :func:`~flopcast.training.step.train_step` and charges its FLOPs to the ledger; every few steps the losses are
   read (:mod:`flopcast.training.losses`), a validation and a checkpoint are made when due;
3. :func:`finalize` -- the last checkpoint, the adapters and their model cards, ``flops.json``, ``status.json``
   and the ledger row settled.

It runs under Accelerate, so ``accelerate launch`` trains on several processes or GPUs: each process takes its
share of every global batch; the main process logs, checkpoints and writes the ledger. PEFT wraps the base model
in place: after training, the base model carries the LoRA layers. The files a run directory holds are listed in
:mod:`flopcast.training.rundir`; how runs stop and resume, in ``docs/studies.md``.
"""

from __future__ import annotations

import json
import random
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from ..budget.costs import RunCost, run_cost, val_chunks_used
from ..budget.flops import Arch, lora_shape
from ..budget.ledger import RunLedger
from ..budget.lock import DirLock
from ..budget.records import Record
from ..config import LoraSpec, TrainConfig, save_toml, to_dict
from ..encoding.chunks import Chunks, make_chunks, series_token_ids, target_starts
from ..encoding.codec import LLMTimeCodec
from ..errors import FlopcastError, Interrupted
from ..model.compile import compile_body, compile_on, graphs_on, uncompile_body
from ..model.heads import head_ids_for, numeric_head, remap_table
from ..model.lora import attach_lora, load_adapter, save_adapter, trainable_parameters
from ..model.loss import lm_loss
from .card import write_card
from .checkpoint import CheckpointManager, TrainState, set_rng_state
from .losses import LossReader, StepRecord, sync_every
from .oom import check_step_memory, probe_batch
from .rundir import RunLog, TrainResult, finished_run, run_fingerprint, series_sha256
from .signals import StopRequest, close_process_group_at_exit, stop_requested
from .step import BatchOrder, Learner, lr_at, make_batch, make_optimizer, on_device, train_step, validation_loss


@dataclass(frozen=True)
class RunSpec:
    """What one training run is: where it lives, what it adapts and how, and the series it learns from.

    Attributes:
        dir: the run directory (created; a second process on it stops with one line).
        lora: the adapter's settings.
        train: the training settings (steps, batch, sequence length, learning rate, ...).
        codec: the LLMTime codec (with its scale) the series are written in.
        train_series: the series trained on, each (T_i, V).
        val_series: the series validated on (none: no validation loss, the last adapter is the best).
        val_from: per validation series, the step its scored tokens start at (a time split's); None: all are.
        name: the run's name in the ledger and in wandb.
        model_name: the base model's name, written into the adapter's metadata and model card.
    """

    dir: Path
    lora: LoraSpec
    train: TrainConfig
    codec: LLMTimeCodec
    train_series: Sequence[np.ndarray]
    val_series: Sequence[np.ndarray] = ()
    name: str = "train"
    val_from: Sequence[int] | None = None
    model_name: str = ""


@dataclass
class Batches:
    """The training and validation chunks (on the device on an accelerator) and the seeded order of batches."""

    train: Chunks
    val: Chunks | None
    order: BatchOrder


@dataclass
class Run:
    """What :func:`setup` builds for :func:`fit` and :func:`finalize`."""

    spec: RunSpec
    learner: Learner
    head_ids: list[int] | None     # the numeric head's columns (None: the whole vocabulary)
    batches: Batches
    cost: RunCost
    state: TrainState              # what a checkpoint restores
    ckpt: CheckpointManager
    log: RunLog
    losses: LossReader

    @property
    def main(self) -> bool:
        return bool(self.learner.acc.is_main_process)


OnStep = Callable[[int, float], None]
LossFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def train(model: Any, tokenizer: Any, spec: RunSpec, ledger: RunLedger | None = None, progress: bool = True,
          on_step: OnStep | None = None) -> TrainResult:
    """Train a LoRA adapter on ``model`` as ``spec`` says; resumes from ``spec.dir/checkpoint`` if present.

    A finished run with the same settings is returned as it is (nothing is charged again); one with other settings
    is an error. ``on_step(step, loss)`` is called for every optimizer step once its loss has been read from the
    device (every ``train.sync_every`` steps)."""
    data_sha = series_sha256(spec.train_series, spec.val_series)
    done = finished_run(spec.dir, spec.lora, spec.train, data_sha)
    if done is not None:
        return done
    acc = Accelerator(cpu=not torch.cuda.is_available())
    with ExitStack() as resources:
        if acc.is_main_process:
            resources.enter_context(DirLock(spec.dir))  # a second process on this run directory stops here
        run = setup(acc, model, tokenizer, spec, ledger, data_sha)
        resources.callback(run.log.close)
        if compile_on(spec.train.compile, acc.device):  # the shared base model's body, given back as it came
            compile_body(acc.unwrap_model(run.learner.model), graphs_on(spec.train.compile, acc.device))
            resources.callback(uncompile_body, acc.unwrap_model(run.learner.model))
        status, signum = _fit_until_stopped(run, progress, on_step)
        return finalize(run, status, signum)


def _fit_until_stopped(run: Run, progress: bool, on_step: OnStep | None) -> tuple[str, int | None]:
    """:func:`fit` with the numeric head swapped in, signals turned into a stop after the step under way, and a
    progress bar; (status, the signal that stopped it)."""
    acc = run.learner.acc
    with ExitStack() as loop:
        if run.head_ids:  # the shared base model gets its full head back on the way out
            loop.enter_context(numeric_head(acc.unwrap_model(run.learner.model), run.head_ids))
        stop = loop.enter_context(StopRequest())
        bar = None
        if progress and run.main:  # off without a terminal (disable=None)
            bar = loop.enter_context(tqdm(total=run.spec.train.steps, initial=run.state.step, desc=run.spec.name,
                                          unit="step", disable=None))
        try:
            return fit(run, stop, bar, on_step), stop.signum
        except KeyboardInterrupt as e:  # a second signal, or a Ctrl-C that StopRequest could not catch
            return "interrupted", getattr(e, "signum", stop.signum or signal.SIGINT)


# ----------------------------------------------------------------------------- 1. setup

def setup(acc: Accelerator, model: Any, tokenizer: Any, spec: RunSpec, ledger: RunLedger | None,
          data_sha: str) -> Run:
    """Seeds, data, model and optimizer (restored from the checkpoint when there is one), cost, ledger row, files."""
    cfg = spec.train
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    chunks, val = _chunks(tokenizer, spec)
    ckpt = CheckpointManager(spec.dir)
    if acc.is_main_process:
        ckpt.recover()
    acc.wait_for_everyone()
    head_ids = None
    if cfg.head == "numeric":
        head_ids = head_ids_for(tokenizer, spec.codec.config, chunks.labels, *([] if val is None else [val.labels]))
    check_step_memory(model, cfg, len(head_ids) if head_ids else None, acc.device)
    learner, state = _learner(acc, model, spec, ckpt, head_ids)
    cost = run_cost(Arch.from_config(model.config), cfg, lora_shape(spec.lora), len(val or []),
                    len(head_ids) if head_ids else None)
    batches = Batches(on_device(chunks, acc.device), on_device(val, acc.device) if val is not None else None,
                      BatchOrder(len(chunks), cfg.batch_size, cfg.seed, **state.order))
    record = Record(spec.name, "train", 0, "running", model=spec.model_name, seq=cfg.seq_len, batch=cfg.batch_size,
                    rank=spec.lora.rank)
    run = Run(spec, learner, head_ids, batches, cost, state, ckpt,
              RunLog(acc.is_main_process, ledger, state.wall, record), LossReader(sync_every(cfg, acc.device),
                                                                                  acc.device))
    if run.main:
        run.log.open(spec.dir, cfg, spec.name, state.step)
        _ledger_row(run, ledger)
        _write_config(run, data_sha, trainable_parameters(learner.model))
    return run


def _chunks(tokenizer: Any, spec: RunSpec) -> tuple[Chunks, Chunks | None]:
    """Training chunks (every token a target once) and the first validation chunks."""
    cfg = spec.train
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    chunks = make_chunks(series_token_ids(list(spec.train_series), spec.codec, tokenizer), cfg.seq_len, pad,
                         cfg.stride)
    if not spec.val_series:
        return chunks, None
    val_series = list(spec.val_series)
    starts = target_starts(val_series, list(spec.val_from), spec.codec, tokenizer) if spec.val_from else None
    val = make_chunks(series_token_ids(val_series, spec.codec, tokenizer), cfg.seq_len, pad, cfg.stride, starts)
    k = val_chunks_used(len(val), cfg)
    return chunks, (Chunks(val.input_ids[:k], val.attention_mask[:k], val.labels[:k]) if k else None)


def _learner(acc: Accelerator, model: Any, spec: RunSpec, ckpt: CheckpointManager,
             head_ids: list[int] | None) -> tuple[Learner, TrainState]:
    """The LoRA model and AdamW under Accelerate, restored from the checkpoint (adapter, optimizer, RNG, state) if
    there is one, and the loss (over ``head_ids`` only, when given)."""
    resuming = ckpt.exists()
    peft_model = load_adapter(model, ckpt.dir, trainable=True) if resuming else attach_lora(model, spec.lora)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = make_optimizer(params, spec.train.lr, spec.train.weight_decay)
    state = TrainState()
    if resuming:
        state, opt_state, rng = ckpt.load()
        opt.load_state_dict(opt_state)
        set_rng_state(rng)
    prepared, opt = acc.prepare(peft_model, opt)
    loss_fn = _loss_fn(prepared, head_ids, model.config.vocab_size, acc.device)
    return Learner(prepared, opt, params, loss_fn, acc), state


def _loss_fn(model: Any, head_ids: list[int] | None, vocab: int, device: Any) -> LossFn:
    """The model's own loss, or the numeric head's restricted loss (logits over the series' tokens only)."""
    table = remap_table(head_ids, vocab, device) if head_ids else None
    return lambda b: lm_loss(model, b, table)


def _ledger_row(run: Run, ledger: RunLedger | None) -> None:
    """Continue the run's own ledger row when resuming (charging again what a kill made it redo), else reserve one."""
    if ledger is None:
        return
    st, spec, entry = run.state, run.spec, None
    mine = ledger.resume(spec.name) if st.step > 0 else None  # the row this checkpoint's run left, by name
    if mine is not None and st.ledger_id in (None, mine.id):
        entry = ledger.adopt(mine.id)
    if entry is not None:
        st.flops_redone += max(0, entry.flops_used - st.charged)  # steps after the checkpoint ran, and will run again
        st.ledger_id = entry.id
    else:
        st.ledger_id = ledger.reserve(spec.name, "train", run.cost.planned, model=spec.model_name,
                                      seq=spec.train.seq_len, batch=spec.train.batch_size, rank=spec.lora.rank,
                                      steps=spec.train.steps, info={"lr": spec.train.lr, "run_dir": str(spec.dir)})
        run.log.charge(st)


def _write_config(run: Run, data_sha: str, n_trainable: int) -> None:
    spec = run.spec
    codec = spec.codec.state()
    save_toml({"name": spec.name, "model": spec.model_name, "lora": to_dict(spec.lora), "train": to_dict(spec.train),
               "codec": codec, "seed": spec.train.seed, "data_sha256": data_sha,
               "fingerprint": run_fingerprint(spec.model_name, spec.lora, spec.train, codec, data_sha),
               "chunks": {"train": len(run.batches.train), "val": len(run.batches.val or []),
                          "train_targets": run.batches.train.n_targets},
               "trainable_parameters": n_trainable, **({"head_token_ids": run.head_ids} if run.head_ids else {})},
              spec.dir / "config.toml")


# ----------------------------------------------------------------------------- 2. fit

def fit(run: Run, stop: StopRequest, bar: tqdm | None = None, on_step: OnStep | None = None) -> str:
    """The training loop; returns the status it ended with: done, interrupted, stopped_budget or diverged (a read
    of the losses found one not finite: the loop stops there, and the updates after it were skipped)."""
    cfg, st = run.spec.train, run.state
    status = "done"
    while st.step < cfg.steps:
        if stop_requested(stop, run.learner.acc, st.step % run.losses.every == 0):  # the same step in every process
            status = "interrupted"
            break
        val_due = (st.step + 1) % cfg.eval_every == 0 or st.step + 1 == cfg.steps
        next_cost = run.cost.per_step + (run.cost.per_val if val_due else 0)
        if cfg.max_flops is not None and st.charged + next_cost > cfg.max_flops:
            status = "stopped_budget"
            break
        _step(run, bar)
        checkpoint_due = st.step % cfg.checkpoint_every == 0
        if (run.losses.due or val_due or checkpoint_due) and _read_losses(run, bar, on_step):
            break
        if val_due:
            _validate(run)
        if checkpoint_due:
            _checkpoint(run)
    return "diverged" if _read_losses(run, bar, on_step) else status


def _step(run: Run, bar: tqdm | None) -> None:
    """One optimizer step: its loss stays on the device; its FLOPs go to the ledger at once."""
    st, cfg, acc = run.state, run.spec.train, run.learner.acc
    order = run.batches.order
    before, lr = order.state(), lr_at(st.step, cfg)
    shard = order.next()[acc.process_index::acc.num_processes]  # each process takes its share
    batch, out_of_memory = make_batch(run.batches.train, shard, acc.device), False
    try:
        loss = train_step(run.learner, batch, lr, cfg.grad_clip, run.losses.seen_nonfinite)
    except KeyboardInterrupt:  # cut short before its update: the resumed run takes the same batch again
        order.epoch, order.pos = before["epoch"], before["pos"]
        raise
    except torch.OutOfMemoryError:  # probed after the handler: its traceback holds the failed step's activations
        out_of_memory = True
    if out_of_memory:
        raise _out_of_memory(run, batch)
    st.step, st.flops = st.step + 1, st.flops + run.cost.per_step
    run.losses.add(StepRecord(st.step, lr, st.charged, run.log.wall(), loss))
    run.log.charge(st)  # one UPDATE a step: a killed run has charged all its work
    if bar is not None:
        bar.update(1)


def _read_losses(run: Run, bar: tqdm | None, on_step: OnStep | None) -> bool:
    """Read the losses of the steps since the last read (a host sync), log them, call ``on_step``; True when the
    run has diverged."""
    rows = run.losses.read()
    for rec, loss in rows:
        run.log.row(step=rec.step, loss=loss, lr=rec.lr, flops=rec.flops, time=rec.time)
        if on_step:
            on_step(rec.step, loss)
    if rows and bar is not None:
        bar.set_postfix(loss=f"{rows[-1][1]:.4f}", flops=f"{rows[-1][0].flops:.2e}")
    return run.losses.diverged


def _validate(run: Run) -> None:
    st = run.state
    v = validation_loss(run.learner, run.batches.val, run.spec.train.batch_size)
    if v is None:
        return
    st.flops += run.cost.per_val
    run.log.charge(st)  # at once: a failure before the next step (a full disk at the checkpoint) loses nothing
    run.log.row(step=st.step, val_loss=v, flops=st.charged)
    if run.main and (st.best_val is None or v < st.best_val):
        st.best_val = v
        _save(run, run.spec.dir / "adapter_best")


def _checkpoint(run: Run) -> None:
    if not run.main:
        return
    run.state.order, run.state.wall = run.batches.order.state(), run.log.wall()
    run.ckpt.save(lambda d: _save(run, d), run.learner.opt, run.state)
    run.log.charge(run.state)


def _save(run: Run, directory: Path) -> None:
    spec = run.spec
    save_adapter(run.learner.acc.unwrap_model(run.learner.model), directory, spec.lora, spec.model_name,
                 {"codec": spec.codec.state()})


def _out_of_memory(run: Run, batch: dict[str, torch.Tensor]) -> FlopcastError:
    """The one-line error naming the largest batch that fits (:func:`~flopcast.training.oom.probe_batch`); the failed
    step and every probe are charged at their full size, and the run's ledger row is settled as failed."""
    st, B = run.state, batch["input_ids"].shape[0]
    error, probed = probe_batch(run.learner, batch, run.spec.train.batch_size)
    st.flops_redone += run.cost.per_step + sum(run.cost.per_step * b // B for b in probed)
    run.log.settle(st, "failed")
    return error


# ----------------------------------------------------------------------------- 3. finalize

def finalize(run: Run, status: str, signum: int | None) -> TrainResult:
    """Last checkpoint, adapters, flops.json and status.json, ledger settlement; raises Interrupted after a signal."""
    st, acc = run.state, run.learner.acc
    _read_losses(run, None, None)  # steps a second signal cut short of their read are logged too
    _checkpoint(run)
    wall = run.log.wall()
    if run.main:
        _write_results(run, status, wall)
        run.log.settle(st, status if status != "stopped_budget" else "done",
                       info={"best_val_loss": st.best_val, "status": status})
    acc.wait_for_everyone()  # no process returns before the main one has written the adapter
    if acc.num_processes > 1:
        close_process_group_at_exit()
    if signum is not None:  # stopped (or finished during the step the signal arrived in): the caller stops too
        if run.main:
            print(f"{run.spec.name}: stopped by {signal.Signals(signum).name} after step {st.step} ({status}); "
                  "checkpoint saved, running the same command again resumes", file=sys.stderr)
        raise Interrupted(signum)
    return TrainResult(run.spec.dir, st.step, st.charged, st.best_val, status, wall, st.flops_redone)


def _write_results(run: Run, status: str, wall: float) -> None:
    """The last adapter (and the best, when no validation chose one), flops.json, status.json, the model cards."""
    st, d = run.state, run.spec.dir
    _save(run, d / "adapter")
    if st.best_val is None:
        _save(run, d / "adapter_best")
    (d / "flops.json").write_text(json.dumps({
        "per_step": run.cost.per_step, "per_validation": run.cost.per_val, "steps": st.step, "total": st.charged,
        "redone": st.flops_redone, "planned": run.cost.planned, "ledger_id": st.ledger_id}, indent=2))
    (d / "status.json").write_text(json.dumps({"status": status, "steps": st.step, "flops": st.charged,
                                               "best_val_loss": st.best_val, "wall_s": wall}))
    for adapter in ("adapter", "adapter_best"):
        if (d / adapter).is_dir():
            write_card(d / adapter, d)
