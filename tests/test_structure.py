"""The package's shape, checked from its source: no import cycle among mixnet_deploy modules (imports inside
functions count: they run too), no function over 60 lines, precision facts in one module."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mixnet_deploy"
MAX_FUNCTION_LINES = 60


def module_imports(path: Path, package: str = "mixnet_deploy") -> set[str]:
    """The package modules a module imports anywhere in its body (top level, functions, TYPE_CHECKING blocks)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith(f"{package}.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:  # from .engine import x
                found.add(node.module.split(".")[0])
            elif node.level == 1 or node.module == package:  # from . import precision_table
                found |= {a.name for a in node.names}
            elif node.module and node.module.startswith(f"{package}."):
                found.add(node.module.split(".")[1])
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {m: module_imports(PACKAGE / f"{m}.py") & modules - {m} for m in sorted(modules)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_cycles_and_accepts_a_dag():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_parser_sees_function_level_and_relative_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text(
        "from . import precisions\nfrom .engine import x\nimport mixnet_deploy.bench\n"
        "def f():\n    from .runtimes import y\n    from mixnet_deploy.triton import z\n"
    )
    assert module_imports(src) == {"precisions", "engine", "bench", "runtimes", "triton"}


def test_no_import_cycle_among_package_modules():
    graph = import_graph()
    assert "runner_contract" in graph["trt_runner"] and "trt_runner" in graph["runtimes"]  # function-level, read
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > limit
    ]


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def test_every_module_is_checked():
    assert {"cli", "config", "engine_build", "gpu_stack", "presets", "weights"} <= set(MODULES) and len(MODULES) >= 25


@pytest.mark.parametrize("module", MODULES)
def test_no_function_over_60_lines(module):
    assert long_functions(PACKAGE / f"{module}.py") == []


def test_precision_tables_live_in_precision_table_only():
    """No module besides precision_table.py spells a precision -> fact table (the nine old tables are gone)."""
    old = ("TOLERANCES", "_RANK", "SPEED_ORDER", "TRT_PRECISION_MODE", "LEGACY_FLAGS", "PRECISION_CHOICES")
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        assert not names & {*old, "PRECISIONS"} or path.stem == "precision_table", (
            path.name,
            names & {*old, "PRECISIONS"},
        )


# ---------------------------------------------------------------- shared facts have one home (contract.py)

HEAVY_LIBRARIES = {"torch", "onnx", "onnxruntime", "onnxconverter_common", "tensorrt", "PIL"}


def top_level_imports(tree: ast.Module):
    """Imports that run when the module is imported (module body, also inside if/try), not inside functions."""
    for node in tree.body:
        for sub in ast.walk(node) if isinstance(node, ast.If | ast.Try) else (node,):
            if isinstance(sub, ast.Import | ast.ImportFrom):
                yield sub


def heavy_modules(sources: dict[str, str]) -> set[str]:
    """Modules whose import loads torch, onnx, ONNX Runtime, TensorRT or PIL, directly or through another module."""
    trees = {m: ast.parse(src) for m, src in sources.items()}
    libs, deps = {}, {}
    for m, tree in trees.items():
        libs[m], deps[m] = set(), set()
        for node in top_level_imports(tree):
            if isinstance(node, ast.Import):
                libs[m] |= {a.name.split(".")[0] for a in node.names}
            elif node.level == 1:
                deps[m] |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif node.module:
                libs[m].add(node.module.split(".")[0])
    heavy = {m for m in trees if libs[m] & HEAVY_LIBRARIES}
    while True:
        more = {m for m in trees if m not in heavy and deps[m] & heavy}
        if not more:
            return heavy
        heavy |= more


def constant_only_imports(sources: dict[str, str]) -> list[str]:
    """``from .X import A, B`` at module level where every name is an UPPER_CASE constant and X is heavy: the
    module pulls a stage up for a constant (contract.py, which imports nothing heavy, is where such facts live)."""
    heavy = heavy_modules(sources)
    found = []
    for m, src in sources.items():
        for node in top_level_imports(ast.parse(src)):
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            if names and node.level == 1 and node.module in heavy and all(n.isupper() for n in names):
                found.append(f"{m} imports {node.module} for {', '.join(names)}")
    return found


def metadata_key_literals(sources: dict[str, str]) -> list[str]:
    """``"mixnet.*"`` string constants outside contract.py (docstrings aside): a metadata key typed a second time."""
    found = []
    for m, src in sources.items():
        tree = ast.parse(src)
        docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) and id(node) not in docs else None
            if m != "contract" and isinstance(text, str) and text.startswith("mixnet."):
                found.append(f"{m}.py:{node.lineno} {text!r}")
    return found


def package_sources() -> dict[str, str]:
    return {p.stem: p.read_text() for p in PACKAGE.glob("*.py")}


def test_checks_catch_planted_violations():
    planted = {
        "contract": "X = 1\n",
        "stage": "import torch\nLIMIT = 3\n",
        "middle": "from .stage import LIMIT\n",  # a stage pulled up for a constant (and middle is heavy through it)
        "user": "from .middle import helper\nfrom .contract import X\nKEY = 'mixnet.variant'\n",
    }
    assert heavy_modules(planted) == {"stage", "middle", "user"}
    assert constant_only_imports(planted) == ["middle imports stage for LIMIT"]
    assert metadata_key_literals(planted) == ["user.py:3 'mixnet.variant'"]


def test_no_module_imports_a_stage_for_a_constant():
    assert constant_only_imports(package_sources()) == []


def test_metadata_keys_are_spelled_in_contract_only():
    assert metadata_key_literals(package_sources()) == []


def test_contract_and_config_stay_light():
    """contract.py and the option declarations load no stage: --help and the checks run before torch is imported."""
    heavy = heavy_modules(package_sources())
    assert not heavy & {"contract", "config", "precision_table", "metrics", "gpu_stack", "runner_contract"}, heavy


# ---------------------------------------------------------------- parsers: generated from configs, defaults once

GENERATOR = "option_fields"  # the one module that turns config fields into argparse arguments
CLI_ONLY = {"help", "preset", "verbose", "quiet", "json", "markdown", "plot"}  # options no config holds (no default)


def hand_typed_parser_values(source: str, filename: str = "<src>") -> list[str]:
    """``add_argument(..., default=...)`` / ``choices=`` and ``set_defaults(...)`` calls: a default or a choice list
    typed into a parser instead of declared on a config field."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr == "set_defaults":
            found.append(f"{filename}:{node.lineno} set_defaults")
        elif node.func.attr == "add_argument":
            found += [f"{filename}:{node.lineno} {k.arg}=" for k in node.keywords if k.arg in ("default", "choices")]
    return found


def test_hand_typed_default_finder_catches_a_planted_one():
    planted = (
        "def build(p):\n    p.add_argument('--batch', type=int, default=8)\n"
        "    g = p.add_argument_group('x')\n    g.add_argument('--runtime', choices=('a', 'b'))\n"
        "    p.set_defaults(quiet=True)\n    p.add_argument('--json', metavar='FILE')\n"
    )
    assert hand_typed_parser_values(planted) == ["<src>:2 default=", "<src>:4 choices=", "<src>:5 set_defaults"]


@pytest.mark.parametrize("module", [m for m in MODULES if m != GENERATOR])
def test_no_parser_default_or_choice_typed_outside_the_generator(module):
    path = PACKAGE / f"{module}.py"
    assert hand_typed_parser_values(path.read_text(), path.name) == []


def test_every_entry_point_parser_comes_from_its_config():
    """Each console script's parser: every config field with an Option is an argument, whose default (argparse
    SUPPRESS) stays out of the namespace, so the config's own default applies; the rest are CLI-only flags."""
    import argparse

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    from mixnet_deploy import cli, option_fields
    from mixnet_deploy.bench import BenchConfig
    from mixnet_deploy.config import ExportConfig
    from mixnet_deploy.parity import ParityConfig
    from mixnet_deploy.predict import PredictConfig
    from mixnet_deploy.serve import ServeConfig

    scripts = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]
    built = {"export_main": (cli.build_export_parser, ExportConfig), "parity_main": (cli.build_parity_parser,
             ParityConfig), "bench_main": (cli.build_bench_parser, BenchConfig),
             "predict_main": (cli.build_predict_parser, PredictConfig),
             "serve_main": (cli.build_serve_parser, ServeConfig)}  # fmt: skip
    assert {target.split(":")[1] for target in scripts.values()} == set(built)
    for build, config in built.values():
        actions = {a.dest: a for a in build()._actions}
        fields = set(option_fields.options(config))
        assert fields and fields <= set(actions), (config.__name__, fields - set(actions))
        assert set(actions) - fields <= CLI_ONLY, (config.__name__, set(actions) - fields - CLI_ONLY)
        for name in fields:
            assert actions[name].default is argparse.SUPPRESS, (config.__name__, name)
        for name in set(actions) - fields - {"help"}:
            assert actions[name].default in (None, False), (config.__name__, name, actions[name].default)


def test_json_is_written_by_the_one_strict_encoder():
    """json.dump/json.dumps only in atomic.json_text (which writes NaN and Infinity as null): every report,
    manifest, cache and prediction line parses under a strict parser (issue 20)."""
    root = PACKAGE.parent
    found = [f"{p.relative_to(root)}:{n}" for folder in (PACKAGE, root / "benchmarks") for p in folder.glob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\bjson\.dumps?\(", line) and p.name != "atomic.py"]  # fmt: skip
    assert not found, found
