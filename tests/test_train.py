import json
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import TESTS, TRAIN_CFG, train_data, train_tiny

from flopcast.budget import flops as F
from flopcast.budget.ledger import Ledger
from flopcast.config import CodecConfig, LoraSpec, TrainConfig, load_toml
from flopcast.encoding.chunks import IGNORE, make_chunks
from flopcast.model.load import load_model
from flopcast.training.engine import RunSpec, train
from flopcast.training.step import lr_at


def test_chunks_every_token_a_target_once():
    toks = list(range(100, 137))  # 37 tokens
    ch = make_chunks([toks, [1, 2, 3]], seq_len=10, pad_id=0)
    targets = []
    for lab in ch.labels:
        targets += [int(t) for t in lab[1:] if t != IGNORE]  # position 0 is never predicted
    assert sorted(targets) == sorted(toks[1:] + [2, 3])
    last = ch.input_ids[-2]
    assert last.tolist() == toks[-10:]  # the tail gets a full window, not dropped
    assert ch.input_ids[-1].tolist() == [1, 2, 3] + [0] * 7 and ch.labels[-1][3:].tolist() == [IGNORE] * 7
    assert ch.attention_mask[-1].tolist() == [1, 1, 1] + [0] * 7


def test_lr_schedules():
    c = TrainConfig(steps=10, lr=1.0, warmup_steps=2, schedule="cosine")
    assert lr_at(0, c) == 0.5 and lr_at(1, c) == 1.0 and lr_at(2, c) == 1.0
    assert lr_at(9, c) < 0.1
    assert lr_at(5, TrainConfig(steps=10, lr=1.0, schedule="linear")) == 0.5


def test_training_artifacts_and_loss_goes_down(tmp_path, data):
    lg = Ledger(tmp_path / "l.db", 1e13)
    r = train_tiny(tmp_path / "run", data, steps=40, ledger=lg)
    run = tmp_path / "run"
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [x["val_loss"] for x in rows if "val_loss" in x]
    assert vals[-1] < vals[0] and r.best_val_loss == min(vals)
    assert [x["step"] for x in rows if "loss" in x] == list(range(1, 41))
    cfg = load_toml(run / "config.toml")
    assert cfg["lora"]["rank"] == 4 and min(cfg["codec"]["alpha"]) > 0 and cfg["seed"] == 0
    fl = json.loads((run / "flops.json").read_text())
    arch = F.Arch.from_config(load_model("tiny-qwen2").model.config)
    assert fl["per_step"] == F.train_step(arch, 2, 64, F.LoraShape(4)).total
    assert fl["total"] == 40 * fl["per_step"] + 10 * fl["per_validation"] == r.flops
    e = lg.entries()[0]
    assert (e.status, e.flops_used, e.steps) == ("done", r.flops, 40)
    for d in ("adapter", "adapter_best", "checkpoint"):
        assert (run / d / "adapter_config.json").is_file()
    assert json.loads((run / "status.json").read_text())["status"] == "done"


def test_stops_before_flop_allotment(tmp_path, data):
    tr, va, codec = data
    arch = F.Arch.from_config(load_model("tiny-qwen2").model.config)
    per = F.train_step(arch, 2, 64, F.LoraShape(4)).total
    r = train_tiny(tmp_path / "run", (tr, [], codec), steps=50, max_flops=5.5 * per)
    assert r.status == "stopped_budget" and r.steps == 5 and r.flops == 5 * per <= 5.5 * per


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from helpers import train_data, train_tiny
    from flopcast.budget.ledger import Ledger
    def kill(step, loss):
        if step == 7:
            os.kill(os.getpid(), signal.SIGKILL)
    train_tiny({run!r}, train_data(), steps=12, ledger=Ledger({db!r}), on_step=kill)
""")


def _reference_and_stopped(tmp_path, data, template: str):
    """An uninterrupted 12-step run, and the same run in a subprocess that ``template`` stops."""
    ref = train_tiny(tmp_path / "ref", data, steps=12, ledger=Ledger(tmp_path / "ref.db", 1e13))
    db = tmp_path / "l.db"
    Ledger(db, 1e13)
    script = template.format(tests=str(TESTS), run=str(tmp_path / "run"), db=str(db))
    return ref, db, subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


def _same_adapter(a_dir, b_dir) -> bool:
    from safetensors.torch import load_file

    a, b = (load_file(str(d / "adapter" / "adapter_model.safetensors")) for d in (a_dir, b_dir))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kill9_then_resume_matches_uninterrupted(tmp_path, data):
    ref, db, p = _reference_and_stopped(tmp_path, data, KILL_SCRIPT)
    assert p.returncode == -9, p.stderr[-2000:]
    state = torch.load(tmp_path / "run" / "checkpoint" / "state.pt", weights_only=False)
    assert state["step"] == 5  # last checkpoint before the kill at step 7
    per_step = json.loads((tmp_path / "ref" / "flops.json").read_text())["per_step"]
    lg = Ledger(db)  # opening the ledger settles the dead process's lease with what it reported: all 7 steps
    (e,) = lg.entries()
    assert e.status == "abandoned" and e.flops_used == state["flops"] + 2 * per_step
    res = train_tiny(tmp_path / "run", data, steps=12, ledger=lg)  # re-run: resumes and adopts its row
    assert res.steps == 12 and res.flops_redone == 2 * per_step and res.flops == ref.flops + 2 * per_step
    assert len(lg.entries()) == 1 and lg.used() == res.flops  # steps 6-7 ran twice and are charged twice
    assert lg.entries()[0].status == "done"
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 13))
    times = [r["time"] for r in rows if "loss" in r]
    assert times == sorted(times) and times[5] >= times[4]  # the clock continues after the resume, never restarts at 0
    assert _same_adapter(tmp_path / "ref", tmp_path / "run")


TERM_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from helpers import train_data, train_tiny
    from flopcast.budget.ledger import Ledger
    from flopcast.errors import Interrupted
    def term(step, loss):
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)  # mid-run, between checkpoints (every 5 steps)
    try:
        train_tiny({run!r}, train_data(), steps=12, ledger=Ledger({db!r}), on_step=term)
    except Interrupted as e:
        sys.exit(100 + e.signum)
""")


def test_sigterm_checkpoints_the_step_under_way_then_resume_matches(tmp_path, data):
    import signal

    ref, db, p = _reference_and_stopped(tmp_path, data, TERM_SCRIPT)
    assert p.returncode == 100 + signal.SIGTERM, p.stderr[-2000:]
    assert "stopped by SIGTERM after step 7" in p.stderr
    state = torch.load(tmp_path / "run" / "checkpoint" / "state.pt", weights_only=False)
    assert state["step"] == 7  # the step under way was finished and checkpointed, nothing lost
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "interrupted"
    lg = Ledger(db)
    assert lg.entries()[0].status == "interrupted" and lg.entries()[0].flops_used == state["flops"]
    res = train_tiny(tmp_path / "run", data, steps=12, ledger=lg)
    assert res.steps == 12 and res.flops == ref.flops and lg.used() == ref.flops and len(lg.entries()) == 1
    assert res.flops_redone == 0  # a graceful stop checkpointed its last step: nothing is done twice
    assert _same_adapter(tmp_path / "ref", tmp_path / "run")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers are only in place while training


def test_second_ctrl_c_stops_at_once_with_a_checkpoint(tmp_path, data):
    import signal

    from flopcast.errors import Interrupted

    tr, va, codec = data
    lm = load_model("tiny-qwen2", seed=0)
    # Ctrl-C's usual handler, whatever an earlier test in this worker left (a handler over SIG_IGN is never installed)
    prev = signal.signal(signal.SIGINT, signal.default_int_handler)

    def twice(step, loss):
        if step == 3:
            signal.raise_signal(signal.SIGINT)  # asks to stop after this step ...
            signal.raise_signal(signal.SIGINT)  # ... and the second one stops now
            raise AssertionError("not reached")

    spec = RunSpec(tmp_path / "run", LoraSpec(rank=4), TrainConfig(steps=12, **TRAIN_CFG), codec, tr, va, name="t",
                   model_name="tiny-qwen2")
    try:
        with pytest.raises(Interrupted) as ei:
            train(lm.model, lm.tokenizer, spec, progress=False, on_step=twice)
        assert ei.value.signum == signal.SIGINT and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, prev)
    assert torch.load(tmp_path / "run" / "checkpoint" / "state.pt", weights_only=False)["step"] == 3
    per_step = json.loads((tmp_path / "run" / "flops.json").read_text())["per_step"]
    assert json.loads((tmp_path / "run" / "status.json").read_text()) | {"wall_s": 0} == {
        "status": "interrupted", "steps": 3, "flops": 3 * per_step, "best_val_loss": None, "wall_s": 0}


def test_finished_run_is_returned_not_trained_or_charged_again(tmp_path, data):
    from flopcast.errors import FlopcastError

    lg = Ledger(tmp_path / "l.db", 1e13)
    first = train_tiny(tmp_path / "run", data, steps=6, ledger=lg)
    mtime = (tmp_path / "run" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    again = train_tiny(tmp_path / "run", data, steps=6, ledger=lg)
    assert (again.steps, again.flops, again.best_val_loss, again.status) == (
        first.steps, first.flops, first.best_val_loss, "done")
    assert len(lg.entries()) == 1 and lg.used() == first.flops
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(FlopcastError, match=r"other train settings \(lr, steps\)"):
        train_tiny(tmp_path / "run", data, steps=8, lr=1e-3, ledger=lg)


DDP_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from accelerate import PartialState
    from helpers import train_data, train_tiny
    r = train_tiny({run!r}, train_data(), steps=6)
    if PartialState().is_main_process:
        json.dump({{"steps": r.steps, "flops": r.flops, "world": PartialState().num_processes}}, open({out!r}, "w"))
""")


def _launch_two(tmp_path, template: str, out: str) -> list[str]:
    """``accelerate launch`` of a 2-process script; on a machine without GPUs, --multi_gpu starts
    torchrun and Accelerate picks MULTI_CPU with gloo."""
    import shutil
    from pathlib import Path

    script = tmp_path / "ddp.py"
    script.write_text(template.format(tests=str(TESTS), run=str(tmp_path / "run"), out=str(tmp_path / out)))
    launcher = Path(sys.executable).parent / "accelerate"
    return [str(launcher) if launcher.exists() else shutil.which("accelerate"), "launch", "--multi_gpu",
            "--num_processes",
            "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path):
    p = subprocess.run(_launch_two(tmp_path, DDP_SCRIPT, "r.json"), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["world"] == 2 and r["steps"] == 6
    single = train_tiny(tmp_path / "single", train_data(), steps=6)
    assert r["flops"] == single.flops  # FLOPs are per global batch, whatever the number of processes
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows if "loss" in x] == list(range(1, 7))  # only the main process logs
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()


DDP_TERM_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from accelerate import PartialState
    from helpers import train_data, train_tiny
    try:
        train_tiny({run!r}, train_data(), steps=5000)
    except KeyboardInterrupt as e:
        open({out!r} + str(PartialState().process_index), "w").write(str(getattr(e, "signum", 0)))
""")


@pytest.mark.slow
def test_sigterm_under_accelerate_launch_stops_every_process_at_one_step(tmp_path):
    import signal
    import time

    p = subprocess.Popen(_launch_two(tmp_path, DDP_TERM_SCRIPT, "rank"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE,
                         text=True)
    metrics, deadline = tmp_path / "run" / "metrics.jsonl", time.time() + 300
    def started() -> bool:
        return metrics.is_file() and metrics.read_text().count('"loss"') >= 3

    while not started() and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)  # torchrun passes it on to both workers
    _, err = p.communicate(timeout=300)
    assert [(tmp_path / f"rank{i}").read_text() for i in (0, 1)] == [str(int(signal.SIGTERM))] * 2, err[-3000:]
    state = torch.load(tmp_path / "run" / "checkpoint" / "state.pt", weights_only=False)
    logged = [json.loads(ln)["step"] for ln in metrics.read_text().splitlines() if "loss" in json.loads(ln)]
    assert 3 <= state["step"] < 5000 and logged == list(range(1, state["step"] + 1))
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "interrupted"


def test_wandb_logging_offline_when_not_logged_in(tmp_path, data, monkeypatch):
    import types

    calls = {"init": [], "log": [], "finish": 0}

    class Run:
        def log(self, row, step=None):
            calls["log"].append((step, row))

        def finish(self):
            calls["finish"] += 1

    import importlib.machinery

    fake = types.ModuleType("wandb")
    fake.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
    fake.init = lambda **kw: calls["init"].append(kw) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    train_tiny(tmp_path / "run", data, steps=4, wandb=True)
    assert calls["init"][0]["mode"] == "offline" and calls["init"][0]["project"] == "flopcast"
    steps = [s for s, row in calls["log"] if "loss" in row]
    assert steps == [1, 2, 3, 4] and any("val_loss" in row for _, row in calls["log"]) and calls["finish"] == 1


def test_numeric_head_trains_counts_fewer_flops_and_restores_head(tmp_path, data):
    from flopcast.model.heads import SubsetHead, numeric_head, remap_table
    from flopcast.model.loss import lm_loss

    tr, va, codec = data
    lm = load_model("tiny-qwen2", seed=0)
    head = lm.model.get_output_embeddings()
    spec = RunSpec(tmp_path / "run", LoraSpec(rank=4), TrainConfig(steps=30, head="numeric", **TRAIN_CFG), codec, tr,
                   va, name="t", model_name="tiny-qwen2")
    train(lm.model, lm.tokenizer, spec, progress=False)
    assert lm.model.get_output_embeddings() is head  # the shared base model gets its full head back
    cfg = load_toml(tmp_path / "run" / "config.toml")
    ids = cfg["head_token_ids"]
    assert set(lm.tokenizer.convert_ids_to_tokens(ids)) == set("0123456789.,;")
    arch = F.Arch.from_config(lm.model.config)
    small = F.train_step(F.Arch(**{**arch.__dict__, "vocab": len(ids)}), 2, 64, F.LoraShape(4)).total
    fl = json.loads((tmp_path / "run" / "flops.json").read_text())
    assert fl["per_step"] == small < F.train_step(arch, 2, 64, F.LoraShape(4)).total
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [x["val_loss"] for x in rows if "val_loss" in x]
    assert vals[-1] < vals[0]

    # the restricted loss is the cross-entropy of the full logits' numeric columns
    x = torch.tensor([lm.tokenizer("1.5,2.25;3.0", add_special_tokens=False).input_ids])
    b = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}
    b["labels"][0, :2] = IGNORE
    with torch.no_grad():
        full = lm.model(input_ids=x).logits[:, :, ids]
        lab = b["labels"][0, 1:]
        keep = lab != IGNORE
        want = torch.nn.functional.cross_entropy(full[0, :-1][keep], remap_table(ids, arch.vocab, "cpu")[lab[keep]])
        with numeric_head(lm.model, ids):
            assert isinstance(lm.model.get_output_embeddings(), SubsetHead)
            got = lm_loss(lm.model, b, remap_table(ids, arch.vocab, "cpu"))
    assert torch.allclose(got, want, atol=1e-6)


def test_resume_after_checkpoint_swap_cut_short(tmp_path, data):
    run = tmp_path / "run"
    train_tiny(run, data, steps=12, checkpoint_every=10)
    (run / "checkpoint").rename(run / "checkpoint.old")  # killed between the two renames of the final checkpoint,
    (run / "status.json").unlink()  # so before status.json was written
    r = train_tiny(run, data, steps=12, checkpoint_every=10)
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln)]
    assert r.steps == 12 and steps == list(range(1, 13))
    assert not (run / "checkpoint.old").exists() and (run / "checkpoint" / "state.pt").is_file()


def test_numeric_head_columns_are_computed_one_way():
    """Training and the study's step planning count the same head: the series' alphabet, one token per character."""
    import numpy as np

    from flopcast.errors import FlopcastError
    from flopcast.model.heads import head_ids_for, numeric_token_ids
    from flopcast.model.load import tiny_tokenizer

    tok = tiny_tokenizer()
    ids = numeric_token_ids(tok, CodecConfig())
    assert set(tok.convert_ids_to_tokens(ids)) == set("0123456789.,;")
    assert len(numeric_token_ids(tok, CodecConfig(drop_decimal_point=True))) == len(ids) - 1
    labels = np.array([[IGNORE] + tok("1.5,2.0;", add_special_tokens=False).input_ids])
    assert head_ids_for(tok, CodecConfig(), labels) == ids  # digits never seen in training still get a column
    with pytest.raises(FlopcastError, match="outside the series' alphabet"):
        head_ids_for(tok, CodecConfig(), np.array(tok("1.5 abc", add_special_tokens=False).input_ids))


def test_checkpoints_load_onto_the_cpu_and_keep_each_gpus_rng(tmp_path, monkeypatch):
    """A checkpoint is read with its tensors mapped to the CPU (the optimizer's state then follows its parameters
    into the resumed run's device), so a run saved on a GPU resumes on any device; each GPU's RNG state is saved
    and restored (CUDA faked here: the path, on a CPU)."""
    from flopcast.training import checkpoint as ck

    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.tensor([1, 2, 3], dtype=torch.uint8)])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([param])
    param.grad = torch.ones(3)
    opt.step()
    mgr = ck.CheckpointManager(tmp_path)
    mgr.save(lambda d: d.mkdir(parents=True), opt, ck.TrainState(step=3))
    seen, real_load = {}, torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: seen.update(kw) or real_load(*a, **kw))
    state, opt_state, rng = mgr.load()
    assert seen["map_location"] == "cpu" and state.step == 3 and opt_state["state"][0]["step"] == 1
    ck.set_rng_state(rng)
    assert [t.tolist() for t in restored[0]] == [[1, 2, 3]]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # another machine: its GPUs keep their seeds
    ck.set_rng_state(rng)
    assert len(restored) == 1


@pytest.mark.slow
def test_train_cli_on_two_processes_without_a_script(tmp_path, capsys):
    """``flopcast train --processes 2``: the run under accelerate launch (2 CPU processes, gloo), the same steps,
    FLOPs and ledger rows as on one process, and its test evaluation after it; a user error inside comes back as
    one line."""
    from helpers import run_cli

    from flopcast.config import load_toml

    common = ["train", "--model", "tiny-qwen2", "--steps", 4, "--seq-len", 32, "--batch-size", 2, "--context", 64,
              "--max-series", 2, "--budget", 1e12]
    code, _, err = run_cli(capsys, *common, "-o", tmp_path / "one")
    assert code == 0, err
    code, _, err = run_cli(capsys, *common, "-o", tmp_path / "two", "--processes", 2)
    assert code == 0, err
    one, two = (json.loads((tmp_path / d / "stages/train/run/flops.json").read_text()) for d in ("one", "two"))
    assert two["steps"] == one["steps"] == 4 and two["total"] == one["total"]
    rows = [json.loads(ln) for ln in (tmp_path / "two/stages/train/run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # one process logs
    assert load_toml(tmp_path / "two" / "plan.toml")["train"]["processes"] == 2
    used = {d: Ledger(tmp_path / d / "ledger.db").used() for d in ("one", "two")}
    assert used["one"] == used["two"]
    from flopcast.config import ModelSpec
    from flopcast.errors import FlopcastError
    from flopcast.training.launch import train_in_processes

    tr, va, codec = train_data()  # a user error in the launched processes comes back as its one line
    spec = RunSpec(tmp_path / "poor" / "run", LoraSpec(rank=4), TrainConfig(steps=4, **TRAIN_CFG), codec, tr, va,
                   name="poor")
    with pytest.raises(FlopcastError, match=r"^train 'poor' needs .* FLOPs but only 1\.000e\+06 .* are left"):
        train_in_processes(spec, ModelSpec("tiny-qwen2"), 0, Ledger(tmp_path / "poor.db", 1e6), 2)
