"""Where the wall time of a whole study goes, on whatever device is present, measured in one run.

    python benchmarks/study_speed.py [--model random:../shared/models/qwen2.5-0.5b-arch] [--plan plans/reference.toml]
                                     [--steps 2] [--eval-series 2] [--baseline-series 100]

Prints:

1. the matmul peak this device reaches (bf16 4096^3 on CUDA, fp32 2048^3 on CPU), measured here;
2. LoRA training ms/step at B=4 for S=512 and S=768 (and S=128, which the context sweep uses), with the
   reference-count FLOP rate and its fraction of that peak (flopcast's own step,
   ``flopcast.training.step.train_step``,
   under ``--compile``; ``--train-only`` stops here);
3. evaluation windows/s: the seed protocol's windows of ``--eval-series`` test series at every context length
   of the plan, through flopcast's batched constrained decoder (``flopcast.evaluation.evaluate.forecast_windows``);
4. baseline seconds: every baseline of the plan on the seed protocol's windows of ``--baseline-series`` test
   series (the reference protocol's 700 windows at 100 series);
5. the extrapolated wall time of the whole plan: each run's planned FLOPs (the planner's steps and validations,
   ``remaining`` filled with what the budget leaves) at the rate measured for its S, each evaluation's windows at
   the measured rate, baselines once.

Default model: a random-initialised Qwen2.5-0.5B (``random:`` + the architecture directory in ../shared) when
present, else the embedded SmolLM2-135M. The same script runs on CPU and GPU; compare figures from one device.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from flopcast.budget import flops
from flopcast.budget.costs import generation_bound, run_cost
from flopcast.config import EvalConfig, ForecastConfig, LoraSpec
from flopcast.data.dataset import split
from flopcast.data.io import load
from flopcast.encoding.codec import LLMTimeCodec
from flopcast.encoding.windows import build_windows, window_grammar
from flopcast.evaluation.baselines import run_baseline
from flopcast.evaluation.evaluate import forecast_windows
from flopcast.model.compile import RECOMPILE_LIMIT, compile_body, compile_on, compiled_graphs, graphs_on, uncompile_body
from flopcast.model.load import load_model
from flopcast.model.lora import attach_lora
from flopcast.model.loss import lm_loss
from flopcast.study.plan import load_plan
from flopcast.training.step import Learner, make_optimizer, train_step

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ARCH_DIR = SHARED / "models" / "qwen2.5-0.5b-arch"
DATA = SHARED / "data" / "lotka_volterra_data.h5"


def default_model() -> str:
    """A random-initialised Qwen2.5-0.5B when ../shared has its architecture, else the embedded SmolLM2-135M."""
    return f"random:{ARCH_DIR}" if (ARCH_DIR / "config.json").is_file() else "smollm2-135m"


def default_data() -> str | None:
    return str(DATA) if DATA.is_file() else None


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_peak(device: str) -> float:
    n, dtype = (4096, torch.bfloat16) if device == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    reps, t = 20 if device == "cuda" else 5, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return reps * 2 * n ** 3 / (time.perf_counter() - t)


def train_ms(lm, lora: LoraSpec, codec, series, B: int, S: int, steps: int,
             compile_setting: str | None) -> tuple[float, float]:
    """(milliseconds per LoRA step, seconds of compiling) of flopcast's training step at B x S, as the engine runs it:
    its optimizer (fused AdamW), its loss (chunked beyond 2 GiB of logits), ``train.compile`` and losses read once
    at the end (a GPU run reads them every 16 steps). Warm-up steps first: three when compiled (their time less
    three timed steps is the compiling), else one."""
    ids = [t for s in series for t in lm.tokenizer(codec.encode(s), add_special_tokens=False).input_ids]
    x = torch.tensor(ids[:B * S]).view(B, S).to(lm.device)
    batch = {"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x.clone()}
    model = attach_lora(lm.model, lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, 1e-4, 0.0)
    compiled, graphs = compile_on(compile_setting, lm.device), graphs_on(compile_setting, lm.device)
    if compiled:
        compile_body(model, graphs)
    seen_nonfinite = torch.zeros((), dtype=torch.bool, device=lm.device)
    learner = Learner(model, opt, params, lambda b: lm_loss(model, b))
    step = lambda: train_step(learner, batch, 1e-4, 1.0, seen_nonfinite)  # noqa: E731
    n_warm = 3 if compiled else 1
    t = time.perf_counter()
    for _ in range(n_warm):
        step()
    sync()
    warm = time.perf_counter() - t
    t = time.perf_counter()
    losses = [step() for _ in range(steps)]
    torch.stack(losses).tolist()
    sync()
    ms = 1000 * (time.perf_counter() - t) / steps
    if compiled:
        uncompile_body(model)  # evaluation decodes with its own compile setting
    lm.model = model.unload()  # the base model back, without the adapter
    return ms, max(0.0, warm - n_warm * ms / 1000)


def _seconds(fn, *args, **kwargs) -> float:
    """Wall seconds of ``fn(*args, **kwargs)``, the device's queue drained."""
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    sync()
    return time.perf_counter() - t0


def eval_rate(lm, codec, series, cfg: EvalConfig, compile_setting: str | None) -> tuple[float, int, dict[int, float]]:
    """(windows/s, windows, compiling seconds per context) of the seed protocol over ``series`` at every context
    length of ``cfg``, decoding with ``compile_setting``. The warm-up is the same call (the same batch shapes, so a
    compiled step compiles there, not in the timed call); its time less the timed call's is the compiling."""
    n, t, warm = 0, 0.0, {}
    for S in cfg.contexts:
        wins = build_windows(series, codec, lm.tokenizer, S, cfg)
        if not wins:
            continue
        grammar = window_grammar(wins, lm.tokenizer, codec, wins[0].truth.shape[1])
        fcfg = ForecastConfig(horizon=cfg.horizon, batch_size=cfg.batch_size, max_int_digits=grammar.max_int,
                              compile=compile_setting)
        first, second = (_seconds(forecast_windows, lm.model, lm.tokenizer, codec, wins, fcfg) for _ in range(2))
        t, warm[S], n = t + second, max(0.0, first - second), n + len(wins)
    return n / t, n, warm


def baseline_seconds(codec, tokenizer, series, cfg: EvalConfig, dt: float) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    for S in cfg.contexts:
        wins = build_windows(series, codec, tokenizer, S, cfg)
        n += len(wins)
        for b in cfg.baselines:
            run_baseline(b, [w.context for w in wins], cfg.horizon, dt)
    return time.perf_counter() - t0, n


def compile_seconds(plan, train_warm: dict[int, float], eval_warm: dict[int, float]) -> tuple[float, list[str]]:
    """Compiling in ``plan``: a training variant per distinct (S, rank) at the compiling measured for the nearest S
    (its validation variant, compiled once too, not counted), and a decoding variant per (context, adapter shape) at
    the compiling measured for that context (adapter shapes: none, and each rank a trained stage may evaluate).
    Empty dicts: that part is not compiled."""
    variants, ranks = set(), set()
    for st in plan.stages:
        for run in st.runs(plan.train, plan.lora):
            variants.add((run.train.seq_len, run.lora.rank))
            if st.evaluate:
                ranks.add(run.lora.rank)
    tr = sum(train_warm[min(train_warm, key=lambda s: abs(s - S))] for S, _ in variants) if train_warm else 0.0
    ev = (1 + len(ranks)) * sum(eval_warm.values())
    lines = [f"  compiling, training       {tr:8.1f} s  ({len(variants)} (S, rank) variants)"] if train_warm else []
    if eval_warm:
        lines.append(f"  compiling, decoding       {ev:8.1f} s  ({1 + len(ranks)} adapter shapes x contexts)")
    return tr + ev, lines


def makespan(seconds: list[float], devices: int) -> float:
    """Wall time of independent runs of ``seconds`` on ``devices`` workers, a run per worker at a time, longest
    first to the least loaded (what ``flopcast run --ray`` does with a stage's runs, at best)."""
    load = [0.0] * devices
    for s in sorted(seconds, reverse=True):
        load[load.index(min(load))] += s
    return max(load)


def plan_seconds(plan, arch, rate_at: dict[int, float], windows: dict[int, int], win_rate: float, base_s: float,
                 val_chunks: int, grammar, devices: int = 1) -> tuple[float, list[str]]:
    """Extrapolated wall time of ``plan``: every run's planned FLOPs at the measured rate for its S (the nearest
    measured S), a stage's runs spread over ``devices`` (one run per device, :func:`makespan`), every
    evaluation's windows at the measured rate, baselines once; the lines that add up to it."""
    cfg, spent, total, lines = plan.eval, 0, base_s, [f"  baselines once            {base_s:8.1f} s"]
    n_eval = sum(windows.values())
    ev_flops = sum(generation_bound(arch, n, S, grammar.max_tokens(cfg.horizon)) for S, n in windows.items())
    train, lora = plan.train, plan.lora
    for st in plan.stages:
        runs, each = st.runs(train, lora), []  # a stage on a base takes its lr/rank: the plan's stand in
        for run in runs:
            t, lo = run.train, run.lora
            if st.steps == "remaining":
                per = run_cost(arch, t, flops.LoraShape(lo.rank), val_chunks).per_step
                left = plan.budget - spent - ev_flops
                t = replace(t, steps=max(1, int(left // per)))
            c = run_cost(arch, t, flops.LoraShape(lo.rank), val_chunks)
            spent += c.planned
            each.append(c.planned / rate_at[min(rate_at, key=lambda s: abs(s - t.seq_len))])
        secs = makespan(each, devices) if each else 0.0
        evals = st.kind == "eval" or st.evaluate
        secs += n_eval / win_rate if evals else 0.0
        spent += ev_flops if evals else 0
        total += secs
        lines.append(f"  {st.name:12s} {len(runs):2d} run(s) {'+ eval' if evals else '      '} {secs:8.1f} s")
    return total, lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--plan", default=str(ROOT / "plans" / "reference.toml"))
    ap.add_argument("--data", default=default_data())
    ap.add_argument("--steps", type=int, default=2, help="timed training steps per S (after the warm-up)")
    ap.add_argument("--eval-series", type=int, default=2, help="test series whose seed-protocol windows are timed")
    ap.add_argument("--baseline-series", type=int, default=100)
    ap.add_argument("--compile", default=None, choices=["auto", "on", "off", "graphs"],
                    help="train.compile (default auto; graphs: CUDA graphs too)")
    ap.add_argument("--train-only", action="store_true", help="time the training steps only (no eval, baselines, plan)")
    ap.add_argument("--contexts", default="128,512,768", help="training S to time, comma-separated")
    a = ap.parse_args()
    run(a)


def run(a) -> None:
    plan = load_plan(a.plan)
    lm = load_model(a.model, seed=0)
    dev = lm.device if isinstance(lm.device, str) else lm.device.type
    dev = "cuda" if str(dev).startswith("cuda") else "cpu"
    if a.data:
        ds = load(a.data)
    else:
        from flopcast.data.simulate import simulate

        ds = simulate(plan.simulate)
    print(f"data: {a.data or 'simulated'} ({len(ds.series)} series)")
    sp = split(len(ds.series), plan.split)
    train_series, test = [ds.series[i] for i in sp.train], [ds.series[i] for i in sp.test]
    codec = LLMTimeCodec.fit(plan.codec, train_series)
    arch = flops.Arch.from_config(lm.model.config)
    print(f"device {torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'} ({torch.get_num_threads()} threads), "
          f"model {a.model} ({lm.dtype}), torch {torch.__version__}")
    peak = matmul_peak(dev)
    print(f"matmul peak ({'bf16 4096^3' if dev == 'cuda' else 'fp32 2048^3'}): {peak / 1e12:.2f} TFLOP/s")
    rate_at, train_warm = {}, {}
    for S in [int(c) for c in a.contexts.split(",")]:
        ms, train_warm[S] = train_ms(lm, replace(plan.lora, train_lm_head_bias=False), codec, train_series, 4, S,
                                     a.steps, a.compile)
        ref = flops.train_step(arch, 4, S, flops.LoraShape(plan.lora.rank)).total
        rate_at[S] = ref / (ms / 1000)
        print(f"train B=4 S={S:4d}: {ms:9.1f} ms/step, {rate_at[S] / 1e12:7.3f} TFLOP/s by the reference count, "
              f"{rate_at[S] / peak:5.1%} of the measured peak (compile {a.compile or 'auto'}: "
              f"{train_warm[S]:.1f} s compiling)")
    print(f"compiled graphs so far: {compiled_graphs()} (torch keeps {RECOMPILE_LIMIT} variants per function)")
    if a.train_only:
        return
    cfg = plan.eval
    settings = [cfg.compile] + (["off"] if dev == "cuda" and compile_on(cfg.compile, "cuda") else [])
    for setting in settings:  # on a GPU, compiled decoding (the default) and eager decoding, each with its warm-up
        r, n, w = eval_rate(lm, codec, test[: a.eval_series], cfg, setting)
        print(f"eval (seed protocol, {a.eval_series} series, S={list(cfg.contexts)}, batch {cfg.batch_size}, "
              f"compile {setting or 'auto'}): {r:.2f} windows/s over {n} windows; compiling "
              + ", ".join(f"S={S} {s:.1f} s" for S, s in w.items()))
        if setting == cfg.compile:
            rate, eval_warm = r, w
    print(f"compiled graphs after the evaluations: {compiled_graphs()}")
    dt = float(ds.time[1] - ds.time[0]) if ds.time is not None and len(ds.time) > 1 else 1.0
    base_s, nb = baseline_seconds(codec, lm.tokenizer, test[: a.baseline_series], cfg, dt)
    print(f"baselines {', '.join(cfg.baselines)} on {nb} windows ({a.baseline_series} series): {base_s:.1f} s")
    windows = {S: len(build_windows(test, codec, lm.tokenizer, S, cfg)) for S in cfg.contexts}
    grammar = window_grammar(build_windows(test[:5], codec, lm.tokenizer, max(cfg.contexts), cfg), lm.tokenizer,
                             codec, 2)
    val_chunks = plan.train.val_batches * plan.train.batch_size
    total, lines = plan_seconds(plan, arch, rate_at, windows, rate, base_s * len(test) / max(1, a.baseline_series),
                                val_chunks, grammar)
    comp_s, comp_lines = compile_seconds(plan, train_warm if compile_on(a.compile, dev) else {},
                                         eval_warm if compile_on(cfg.compile, dev) else {})
    print(f"whole plan {plan.name!r} ({plan.budget:.0e} FLOPs, {sum(windows.values())} test windows per evaluation), "
          f"extrapolated: {(total + comp_s) / 60:.1f} min")
    print("\n".join(lines + comp_lines))
    print(f"(the hardware limit by the reference count at the measured peak: {plan.budget / peak / 60:.1f} min)")
    for k in (1, 4, 8):  # flopcast run --ray: a stage's runs on k such devices, one run each
        t_k, _ = plan_seconds(plan, arch, rate_at, windows, rate, base_s * len(test) / max(1, a.baseline_series),
                              val_chunks, grammar, devices=k)
        print(f"whole plan on {k} device(s), a stage's runs in parallel (--ray): {(t_k + comp_s) / 60:.1f} min")


if __name__ == "__main__":
    main()
