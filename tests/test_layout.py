"""The house rules a newcomer can rely on, checked on the source itself (the import directions are checked by
``lint-imports`` and the types by ``mypy``, both in ``make test``)."""

import ast
import re

import pytest
from helpers import ROOT, TESTS

SRC = ROOT / "src" / "flopcast"
# importing these takes a second or more, or pulls torch in: a module that only sometimes needs them imports them
# inside the function that does, so `import flopcast`, `flopcast --help` and the torch-free commands start without
HEAVY = {"torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "huggingface_hub", "matplotlib",
         "scipy", "pandas", "h5py", "wandb", "tqdm", "statsforecast", "ray"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for f in sorted(SRC.rglob("*.py")):
        parts = ("flopcast", *f.relative_to(SRC).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(f.read_text(), str(f))
    return out


def _is_package(name: str) -> bool:
    return (SRC.joinpath(*name.split(".")[1:]) / "__init__.py").is_file()


def _target(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute module names an import statement in ``module`` names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level == 0:
        return [node.module or ""]
    parts = module.split(".")
    stem = ".".join(parts[: len(parts) - node.level + (1 if _is_package(module) else 0)]
                    + ([node.module] if node.module else []))
    return [stem] if node.module else [f"{stem}.{a.name}" for a in node.names]


def _heavy_modules(modules: dict[str, ast.Module]) -> set[str]:
    """flopcast modules that import a heavy library when they are imported (directly or through other flopcast
    modules' top-level imports)."""
    top = {name: {t for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                  for t in _target(name, node)} for name, tree in modules.items()}
    heavy = {n for n, ts in top.items() if any(t.split(".")[0] in HEAVY for t in ts)}
    while more := {n for n, ts in top.items() if n not in heavy and any(t in heavy for t in ts)}:
        heavy |= more
    return heavy


def _light_imports(modules: dict[str, ast.Module]) -> list[str]:
    """Imports inside functions that keep nothing heavy out of start-up."""
    heavy, light = _heavy_modules(modules), []
    for name, tree in modules.items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        targets = _target(name, node)
                        if not any(t.split(".")[0] in HEAVY or t in heavy for t in targets):
                            light.append(f"{name}.{fn.name}: {', '.join(targets)}")
    return light


def test_imports_inside_functions_only_keep_heavy_libraries_out_of_start_up():
    modules = _modules()
    assert "flopcast.training.engine" in _heavy_modules(modules) and "flopcast.api.tools" in _heavy_modules(modules)
    assert not _light_imports(modules)


def test_the_rule_reports_a_light_import_inside_a_function():
    extra = ast.parse("def f():\n    from .codec import LLMTimeCodec\n")
    assert _light_imports({**_modules(), "flopcast.encoding.extra": extra}) == [
        "flopcast.encoding.extra.f: flopcast.encoding.codec"]


def test_at_most_eight_modules_at_the_top_and_every_file_and_function_fits():
    top = [f.name for f in SRC.glob("*.py")]
    assert len(top) <= 8, top
    long_files, long_functions = [], []
    for f in SRC.rglob("*.py"):
        text = f.read_text()
        if text.count("\n") > 400:
            long_files.append(f"{f.relative_to(SRC)} ({text.count(chr(10))} lines)")
        for fn in ast.walk(ast.parse(text)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and fn.end_lineno - fn.lineno >= 60:
                long_functions.append(f"{f.relative_to(SRC)}:{fn.name}")
    assert not long_files and not long_functions, (long_files, long_functions)


@pytest.mark.parametrize("test_file", sorted(TESTS.glob("test_*.py")), ids=lambda p: p.name)
def test_no_test_module_imports_another(test_file):
    for node in ast.walk(ast.parse(test_file.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        assert not [n for n in names if n.split(".")[0].startswith("test_")], (test_file.name, names)
    scripts = re.findall(r"^\s*(?:from|import)\s+test_\w+", test_file.read_text(), re.M)  # subprocess scripts too
    assert not scripts, (test_file.name, scripts)


def test_every_module_says_what_it_does():
    missing = [f.relative_to(SRC) for f in SRC.rglob("*.py")
               if f.name != "__main__.py" and not ast.get_docstring(ast.parse(f.read_text()))]
    assert not missing, missing
