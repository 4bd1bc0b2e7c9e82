"""The model card (``README.md``) of a saved adapter: what it is, what it cost, how well it forecasts, how to
load it -- read from the run directory's own files, so the card and the files never disagree. No torch.

``train`` writes it next to each adapter when a run ends; a study writes it again, with the test metrics per
context length, once the stage's best adapter has been evaluated.
"""

from __future__ import annotations

from pathlib import Path

from ..config import load_toml
from ..results import EvalResult, read_json

FLOP_CONVENTION = "the reference study's count: add/mul/div 1, exp/log/sqrt 10, backward = 2x forward"


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _settings(cfg: dict, status: dict) -> list[str]:
    lora, codec, train = cfg.get("lora", {}), cfg.get("codec", {}), cfg.get("train", {})
    codec_line = (f"scale `{codec.get('scale_mode', '?')}` ({'per variable' if codec.get('per_variable') else 'pooled'}"
                  f"), alpha {codec.get('alpha', '-')}, offset beta {codec.get('beta', '-')} (values are written as "
                  f"(x - beta) / alpha), {codec.get('decimals', '?')} decimals")
    return [
        _row("setting", "value"), _row("---", "---"),
        _row("base model", f"`{cfg.get('model', '?')}`"),
        _row("LoRA", f"rank {lora.get('rank')}, alpha {lora.get('alpha')}, dropout {lora.get('dropout', 0.0)}, "
                     f"targets {', '.join(lora.get('targets', []))}; LM-head bias trained: "
                     f"{'yes' if lora.get('train_lm_head_bias') else 'no'}"),
        _row("codec", codec_line),
        _row("data", f"sha256 `{cfg.get('data_sha256', '?')}`"),
        _row("training", f"{status.get('steps')} steps ({status.get('status')}), batch {train.get('batch_size')}, "
                         f"seq_len {train.get('seq_len')}, lr {train.get('lr')}, {train.get('schedule', 'constant')} "
                         f"schedule, head {train.get('head', 'full')}, seed {cfg.get('seed', train.get('seed', 0))}"),
        _row("training FLOPs", f"{status.get('flops')} ({float(status.get('flops') or 0):.3e}; {FLOP_CONVENTION})"),
        _row("best validation loss", status.get("best_val_loss")),
    ]


def _metrics(test: EvalResult | None) -> list[str]:
    if test is None:
        return ["Not evaluated yet (a study writes the test metrics here after its evaluation)."]
    lines = [f"Protocol `{test.protocol}` on {test.n_series} series of the `{test.config.get('split', 'test')}` "
             f"split, horizon {test.config.get('horizon')}; MSE and MAE in original units.", "",
             _row("S", "windows", "MSE", "MAE", "parse failures", "FLOPs"), _row(*["---"] * 6)]
    for S, ctx in sorted(test.contexts.items()):
        m = ctx.scores.get("model") if ctx.scores else None
        if m is not None:
            lines.append(_row(S, ctx.n_windows, f"{m.mse:.6g}", f"{m.mae:.6g}", f"{m.parse_failure_rate:.6g}",
                              m.flops if m.flops is not None else ""))
    return lines


def _usage(adapter: Path, base: str) -> list[str]:
    return [
        "```python", "from flopcast import Forecaster", "",
        f'fc = Forecaster.from_pretrained("{adapter}")  # loads `{base}` and this adapter',
        "fc.predict(df, horizon=5, id_column=\"id\", timestamp_column=\"timestamp\")  # a long DataFrame", "```", "",
        "With PEFT alone (numbers must then be written in the codec above):", "",
        "```python", "from peft import PeftModel", "from transformers import AutoModelForCausalLM", "",
        f'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "{adapter}")', "```", "",
        "A trained LM-head bias is stored in `lm_head_bias.safetensors` (flopcast's loader restores it); "
        "`flopcast_adapter.json` holds the base model, LoRA settings and codec state.",
    ]


def write_card(adapter: str | Path, run_dir: str | Path | None = None, test: EvalResult | None = None) -> Path:
    """Write ``adapter/README.md`` from the run directory's config.toml and status.json (and ``test``)."""
    adapter = Path(adapter)
    run = Path(run_dir) if run_dir else adapter.parent
    cfg = load_toml(run / "config.toml") if (run / "config.toml").is_file() else {}
    status = read_json(run / "status.json") if (run / "status.json").is_file() else {}
    base = cfg.get("model", "")
    text = "\n".join([
        "---", "library_name: peft", f"base_model: {base}", "tags: [flopcast, lora, time-series-forecasting, llmtime]",
        "---", "", f"# {run.name}: a LoRA adapter for numeric forecasting", "",
        f"LoRA adapter on `{base}`, trained by flopcast to forecast multivariate time series written as LLMTime "
        "text (values scaled as the codec row says, fixed decimals, a `-` before negative ones, `,` between "
        "variables, `;` after each step).", "",
        "## Training", "", *_settings(cfg, status), "", "## Test metrics", "", *_metrics(test), "",
        "## Use", "", *_usage(adapter, base), ""])
    path = adapter / "README.md"
    path.write_text(text)
    return path
