"""The package's layering: no import cycle at module level, and the stages and the core never
import the orchestration layer (study, select, report, mix) or the CLI, even inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "cotdistill"
UPPER = ("cotdistill.study", "cotdistill.select", "cotdistill.report", "cotdistill.mix", "cotdistill.cli")
LOWER = ("registry", "spec", "records", "answers", "collate", "decoding", "runtime", "stats", "store", "fileio", "errors", "artifacts", "progress", "paths",
         "template", "traces", "paper", "tasks", "teachers", "students", "prompts", "generate", "curate", "train",
         "evaluate", "score")


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        out[".".join(rel.parts).removesuffix(".__init__")] = p
    return out


def _imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("cotdistill")}


def test_no_import_cycle_at_module_level():
    mods = _modules()
    graph = {n: {m for m in _imports(n, p, True) if m in mods and m != n} for n, p in mods.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_stages_and_core_never_import_the_orchestration_layer():
    bad = []
    for name, path in _modules().items():
        if not any(name == f"cotdistill.{x}" or name.startswith(f"cotdistill.{x}.") for x in LOWER):
            continue
        for m in _imports(name, path, False):
            if any(m == u or m.startswith(u + ".") for u in UPPER):
                bad.append(f"{name} imports {m}")
    assert not bad, bad


CORE = ("registry", "spec", "records", "answers", "collate", "decoding", "runtime", "students", "stats", "store", "fileio", "errors", "artifacts",
        "progress", "paths", "template")
STAGES = ("cotdistill.generate", "cotdistill.curate", "cotdistill.train", "cotdistill.evaluate", "cotdistill.score",
          "cotdistill.teachers", "cotdistill.prompts")


def test_the_core_never_imports_a_stage():
    bad = []
    for name, path in _modules().items():
        if name not in {f"cotdistill.{x}" for x in CORE}:
            continue
        for m in _imports(name, path, False):
            if any(m == u or m.startswith(u + ".") for u in STAGES):
                bad.append(f"{name} imports {m}")
    assert not bad, bad


def test_only_the_interface_renders_progress():
    """The library reports progress through events (cotdistill.progress.Reporter) and returns
    results; rich is used by the CLI and by progress.py (the one renderer) only."""
    bad = []
    for name, path in _modules().items():
        if name.startswith("cotdistill.cli") or name == "cotdistill.progress":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{name} imports {m}" for m in mods if m == "rich" or m.startswith("rich.")]
    assert not bad, bad


def test_one_lazy_registry_for_tasks_teachers_and_commands():
    """Tasks, teacher backends and CLI command groups resolve through cotdistill.registry: a name
    imports only its own module, and an unknown name is one line listing the known ones."""
    import subprocess
    import sys

    code = ("import sys; from cotdistill.teachers import make_teacher; from cotdistill.tasks import get_task, task_names; "
            "make_teacher('lab'); names = task_names(); get_task('svamp'); "
            "print(sorted(m for m in ('openai', 'torch', 'cotdistill.teachers.hf_local', 'cotdistill.teachers.openai_compat') "
            "if m in sys.modules), len(names))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", "8"], r.stdout  # the lab backend and svamp only: no torch, openai client or other backend
    from cotdistill.errors import UserError
    from cotdistill.teachers.base import TEACHERS

    with pytest.raises(UserError, match="unknown teacher backend 'nope'; known teacher backends: hf, lab, openai, replay, vllm"):
        TEACHERS.get("nope")
