"""Never pickle: no pickle import anywhere, and every torch.load passes weights_only=True."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ["recengine", "plugins", "benchmarks", "tests"]
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def python_files() -> list[Path]:
    return [f for d in SOURCE_DIRS for f in sorted((ROOT / d).rglob("*.py"))]


def unsafe_calls(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords)
                if not safe:
                    found.append(f"torch.load without weights_only=True at line {node.lineno}")
    return found


def test_checker_catches_what_it_should():
    assert unsafe_calls("import pickle") == ["import pickle"]
    assert unsafe_calls("from joblib import load") == ["from joblib import ..."]
    assert unsafe_calls("import torch\ntorch.load('x')")
    assert unsafe_calls("import torch\ntorch.load('x', weights_only=False)")
    assert unsafe_calls("import torch\ntorch.load('x', weights_only=True)") == []


def test_no_pickle_in_the_source_tree():
    files = python_files()
    assert len(files) > 20, "the scan found too few files: is ROOT right?"
    problems = [f"{f.relative_to(ROOT)}: {p}" for f in files for p in unsafe_calls(f.read_text(encoding="utf-8"))]
    assert problems == []
