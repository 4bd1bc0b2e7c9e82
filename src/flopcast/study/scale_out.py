"""A stage's training runs in parallel on Ray (``flopcast run PLAN --ray [ADDRESS]``), under the study's one ledger.

Only the study driver opens the SQLite ledger: :class:`LedgerService` wraps it in a Ray actor on the driver's node,
and each worker reaches it through :class:`RemoteLedger`, which offers the calls a run or an evaluation makes
(reserve or resume-and-adopt its row, report every step or batch, settle). The actor serves one call at a time, so
concurrent runs reserve their planned FLOPs one after another and can never overspend the budget, and no SQLite
file is shared over a network filesystem. A lease names the worker process that holds it, so a worker killed
on the driver's machine is settled as ``abandoned`` (with the FLOPs it reported) before its run is retried.

:func:`train_parallel` submits each run of a stage as a Ray task asking for ``[resources]`` (CPUs, which also
set the run's torch threads; a GPU where the cluster has GPUs). A task whose worker dies is retried by Ray
(``resources.retries``) and resumes from the run's last checkpoint, adopting its own ledger row and charging the
steps it redoes, as a re-run of ``flopcast run`` does. Ctrl-C on the driver cancels every task: each stops as
SIGTERM stops a run (checkpoint, ledger row settled), and running the same command again resumes the study.

A stage's evaluation runs as a Ray task too (:func:`evaluate_remote`: on a GPU where there are GPUs), when its
worker sees the study directory; otherwise on the driver.

Artifacts: when the workers see the study directory (one machine, or a filesystem every node mounts), runs write
there; otherwise each run trains in a directory of its worker and ships it back, and the driver unpacks it into
the study directory. Either way the study directory is complete. Ray is imported only here, and only when asked
for (``pip install flopcast[ray]``).
"""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import sys
import tarfile
import tempfile
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..budget.ledger import Ledger, reserved_on
from ..budget.lock import HOST
from ..budget.rows import ACTIVE, Charge, Entry
from ..config import ModelSpec
from ..errors import FlopcastError, Interrupted
from ..evaluation.evaluate import EvalJob
from ..model.load import load_model
from ..results import EvalResult
from ..training.engine import RunSpec, train
from ..training.rundir import TrainResult
from .plan import Resources

SHARED_MARK = ".flopcast-shared"  # a file the driver writes in the study directory: a worker that sees it shares it


class LedgerService:
    """The study's ledger, served to every worker from one process (made a Ray actor by :func:`start`)."""

    def __init__(self, path: str):
        self.ledger = Ledger(path)

    def call(self, method: str, args: tuple, kwargs: dict) -> Any:
        if method == "resume":  # a dead worker's lease is settled (abandoned, its FLOPs kept) before a retry adopts
            self.ledger.reap()
        return getattr(self.ledger, method)(*args, **kwargs)


class RemoteLedger:
    """What a training run needs of its ledger, answered by the :class:`LedgerService` actor; leases are taken in
    this worker's name (pid, host)."""

    def __init__(self, actor: Any):
        self.actor = actor

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        # waited on as a future, not with ray.get: a task blocked in ray.get lends its CPUs to the scheduler, which
        # then starts another run on them, and both runs share the cores for the rest of their training
        return self.actor.call.remote(method, args, kwargs).future().result()

    def reserve(self, name: str, kind: str, flops_planned: float, *, model: str | None = None,
                seq: int | None = None, batch: int | None = None, rank: int | None = None,
                steps: int | None = None, info: dict | None = None) -> int:
        return int(self._call("reserve", name, kind, flops_planned, model=model, seq=seq, batch=batch, rank=rank,
                              steps=steps, info=info, owner=(os.getpid(), HOST)))

    def resume(self, name: str) -> Entry | None:
        return self._call("resume", name)

    def adopt(self, id: int) -> Entry | None:
        return self._call("adopt", id, owner=(os.getpid(), HOST))

    def progress(self, id: int, flops_used: float, wall_s: float | None = None, steps: int | None = None) -> None:
        self._call("progress", id, flops_used, wall_s=wall_s, steps=steps)

    def settle(self, id: int, flops_used: float, status: str = "done", wall_s: float | None = None,
               steps: int | None = None, info: dict | None = None) -> Entry:
        return self._call("settle", id, flops_used, status=status, wall_s=wall_s, steps=steps, info=info)

    def reserved(self, name: str, kind: str, flops_planned: float, record: Path | None = None,
                 **fields: Any) -> AbstractContextManager[Charge]:
        return reserved_on(self, name, kind, flops_planned, record, **fields)


ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9.\-_]+:\d{1,5}")


def check_ray_address(address: str | None) -> None:
    """Refuse, before anything is written or spent, an address Ray could not join: None (a local instance),
    ``auto`` (the cluster running here) or ``[ray://]HOST:PORT``."""
    if address is not None and address != "auto" and not ADDRESS.fullmatch(address):
        raise FlopcastError(f"Ray address must be 'auto' or HOST:PORT (ray://HOST:PORT for a client), got "
                            f"{address!r}")


def start(address: str | None, ledger: Ledger) -> Any:
    """Join the cluster at ``address`` ("auto": a running one; None: start a local instance) and start the
    ledger's actor on this node; the actor's handle."""
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise FlopcastError("--ray needs Ray: pip install 'flopcast[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, include_dashboard=False)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise FlopcastError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    service = ray.remote(num_cpus=0)(LedgerService)
    return service.options(scheduling_strategy=here).remote(str(ledger.path))


def train_parallel(specs: list[RunSpec], model: ModelSpec, seed: int, res: Resources, study_dir: Path,
                   actor: Any, progress: bool = True, shared: bool = True) -> list[TrainResult]:
    """Train every run of ``specs`` as a Ray task (see the module doc); their results in the same order.
    ``shared=False``: every run trains in its worker's own directory and is shipped back, whether or not the
    worker could see the study directory."""
    import ray

    mark, token = _share_mark(study_dir, shared)
    task = _task(_train_task, res)
    refs = [task.remote(spec, model, seed, max(1, int(res.cpus)), actor, mark, token) for spec in specs]
    try:
        out = []
        for spec, ref in zip(specs, refs):
            out.append(_result(spec, ref, actor))
            if progress:
                print(f"{spec.name}: {out[-1].status} after {out[-1].steps} steps ({out[-1].wall_s:.0f} s on Ray)",
                      file=sys.stderr)
        return out
    except KeyboardInterrupt:
        for ref in refs:  # each run stops as SIGTERM stops it: checkpoint, ledger row settled
            ray.cancel(ref, recursive=False)  # recursive would cancel its call to the ledger actor under way
        ended, _ = ray.wait(refs, num_returns=len(refs), timeout=120)
        for spec, ref in zip(specs, refs):  # stopped before its loop began (loading, setup): its row is closed here
            if ref in ended:
                _close_row(spec.name, actor, "interrupted")
        raise Interrupted(2) from None


def _share_mark(study_dir: Path, shared: bool) -> tuple[str, str]:
    """A token in the study directory (empty: runs are to be shipped back); a worker that reads the same token there
    sees the directory."""
    mark = study_dir / SHARED_MARK
    mark.write_text(secrets.token_hex(8) if shared else "")
    return str(mark), mark.read_text()


def _sees(mark: str, token: str) -> bool:
    """Whether this worker sees the study directory: the token :func:`_share_mark` wrote is there (none: never)."""
    return bool(token) and Path(mark).is_file() and Path(mark).read_text() == token


def _task(fn: Any, res: Resources) -> Any:
    """``fn`` as a Ray task asking for ``res`` (a GPU where the cluster has them, unless ``res.gpus`` says)."""
    import ray

    gpus = res.gpus if res.gpus is not None else (1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)
    return ray.remote(fn).options(num_cpus=res.cpus, num_gpus=gpus, max_retries=res.retries)


def evaluate_remote(job: EvalJob, res: Resources, study_dir: Path, actor: Any) -> EvalResult | None:
    """Evaluate on a Ray worker that sees the study directory (its files, stored baselines and finished contexts
    are written there, its FLOPs charged through ``actor``); None where the worker does not see it (the driver then
    evaluates)."""
    import ray

    mark, token = _share_mark(study_dir, True)
    ref = _task(_evaluate_task, res).remote(job, max(1, int(res.cpus)), actor, mark, token)
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, (FlopcastError, Interrupted)):
            raise e.cause from None
        raise
    except KeyboardInterrupt:  # the evaluation stops too, its ledger row settled with the batches it finished
        ray.cancel(ref, recursive=False)
        ended, _ = ray.wait([ref], timeout=60)
        for S in job.cfg.contexts if ended else ():  # a row its task left open (stopped while reserving it)
            _close_row(job.run.row(S), actor, "interrupted")
        raise Interrupted(2) from None


def _evaluate_task(job: EvalJob, threads: int, actor: Any, mark: str, token: str) -> EvalResult | None:
    import torch

    if not _sees(mark, token):
        return None
    torch.set_num_threads(threads)
    return job.run_on(RemoteLedger(actor))


def _result(spec: RunSpec, ref: Any, actor: Any) -> TrainResult:
    """A task's result, its run directory unpacked when it was shipped; a run whose every try failed is settled as
    abandoned with the FLOPs it reported, and stops the study with one line."""
    import ray

    try:
        result, packed = ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(e.cause, Exception) else None
        if isinstance(cause, (FlopcastError, Interrupted)):
            raise cause from None
        raise _abandoned(spec, actor, str(e).splitlines()[0]) from None
    except ray.exceptions.RayError as e:  # every try's worker died, the node was lost, the task was cancelled
        raise _abandoned(spec, actor, type(e).__name__) from None
    if packed is not None:
        shutil.rmtree(spec.dir, ignore_errors=True)
        spec.dir.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
            tar.extractall(spec.dir, filter="data")
        result = replace(result, run_dir=spec.dir)
    return result


def _close_row(name: str, actor: Any, status: str) -> None:
    """Settle the ledger row ``name`` with the FLOPs it reported, when its task has ended and left it open (a Ray
    worker outlives its task, so the lease would not be reaped as a dead process's)."""
    import ray

    entry = ray.get(actor.call.remote("find", (name,), {}))
    if entry is not None and entry.status in ACTIVE:
        ray.get(actor.call.remote("settle", (entry.id, entry.flops_used), {"status": status}))


def _abandoned(spec: RunSpec, actor: Any, why: str) -> FlopcastError:
    _close_row(spec.name, actor, "abandoned")
    return FlopcastError(f"run {spec.name} failed on every try on Ray ({why}); its FLOPs so far stay charged, "
                         "running the same command again resumes it")


def _train_task(spec: RunSpec, model: ModelSpec, seed: int, threads: int, actor: Any, mark: str,
                token: str) -> tuple[TrainResult, bytes | None]:
    """One run in a Ray worker: in the study directory when this worker sees it, else in a directory of its own,
    sent back packed."""
    import torch

    torch.set_num_threads(threads)
    local = None if _sees(mark, token) else Path(tempfile.mkdtemp(prefix="flopcast-run-"))
    if local is not None:
        spec = replace(spec, dir=local / spec.dir.name)
    lm = load_model(model, seed=seed)
    result = train(lm.model, lm.tokenizer, spec, ledger=RemoteLedger(actor), progress=False)
    if local is None:
        return result, None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(spec.dir, arcname=".")
    shutil.rmtree(local, ignore_errors=True)
    return result, buf.getvalue()
