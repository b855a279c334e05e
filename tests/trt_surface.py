"""The TensorRT Python API the code uses, checked against the real bindings of every TensorRT version we claim.

Three parts:

1. :func:`scan` reads ``mixnet_deploy/*.py`` (AST, nothing imported) and returns every attribute chain on
   TensorRT: chains rooted at the ``tensorrt`` module (``trt.BuilderFlag.GPU_FALLBACK``, ``self._trt.nptype``)
   and chains rooted at TensorRT objects (``engine.create_execution_context().set_input_shape``). The rule for
   objects, derived from the code's own names:

   - a name bound to the module: ``import tensorrt [as X]``, ``X = <...>import_tensorrt()``, ``self.X = X``;
   - a local name, ``self.`` attribute or ``captured["..."]`` key named in :data:`ROLES` is that TensorRT
     class (``builder`` -> ``Builder``, ``engine`` -> ``ICudaEngine``, ...);
   - a name assigned from a TensorRT chain (``cache = cfg.get_timing_cache()``) has the type that chain
     returns, and every method call's result has the return type the bindings' own signature gives
     (pybind11 docstrings: ``get_layer(self, index: int) -> tensorrt.ILayer``), so
     ``network.get_layer(i).get_output(j).dtype`` is checked on ``INetworkDefinition``, ``ILayer``, ``ITensor``.

   A line may restrict its chains to some versions with a trailing comment ``# tensorrt: <11`` (or ``>=11``):
   for code behind a version test.
2. :func:`prepare_bindings` makes one real bindings wheel importable on a CPU machine: it unpacks it and builds,
   with ``cc``, placeholder ``libnvinfer.so.N`` / ``libnvinfer_plugin.so.N`` / ``libnvonnxparser.so.N`` with
   those SONAMEs, adding a stub for each symbol the loader reports undefined (the few bound at load time; the
   rest are bound lazily and never called). Classes, enums, properties and signatures can then be read; calls
   cannot.
3. :func:`check` resolves every chain in a subprocess per version and returns what that version lacks.

``python tests/trt_surface.py`` prints the chains and the verdict per version.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mixnet_deploy"
# The versions the docs claim: JetPack 6 (10.3), NGC 24.12 / docker/Dockerfile (10.7), the newest 11.x.
VERSIONS = {
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",
    "10.7.0.post1": "tensorrt-cu12-bindings==10.7.0.post1",
    "11.4.0.106": "tensorrt-cu12-bindings==11.4.0.106",
}
WHEEL_CACHE = Path(os.environ.get("MIXNET_TRT_WHEELS") or Path.home() / ".cache" / "mixnet-deploy" / "trt-bindings")
# Names the code gives TensorRT objects -> the class in the bindings.
ROLES = {
    "builder": "Builder",
    "network": "INetworkDefinition",
    "config": "IBuilderConfig",
    "cfg": "IBuilderConfig",
    "engine": "ICudaEngine",
    "context": "IExecutionContext",
    "inspector": "EngineInspector",
}
_VERSION_COMMENT = re.compile(r"#\s*tensorrt:\s*(<|>=)\s*(\d+)")


@dataclass(frozen=True)
class Chain:
    file: str
    line: int
    root: str  # "module", a ROLES key, or a derived name
    steps: tuple[tuple[str, bool], ...]  # (attribute, called)
    only: str = ""  # "<11" / ">=11": versions this line applies to ("" = all)

    def text(self) -> str:
        return self.root + "".join(f".{a}{'()' if c else ''}" for a, c in self.steps)


# ---------------------------------------------------------------- 1. scan the code


def _flatten(node: ast.AST) -> tuple[str | None, list[tuple[str, bool]]]:
    """``a.b(x).c`` -> ("a", [("b", True), ("c", False)]); roots: names, ``self.x``, ``d["key"]``."""
    steps, called = [], False
    while True:
        if isinstance(node, ast.Call):
            node, called = node.func, True
        elif isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return "self." + node.attr, steps[::-1]
            steps.append((node.attr, called))
            node, called = node.value, False
        elif isinstance(node, ast.Name):
            return node.id, steps[::-1]
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            return str(node.slice.value), steps[::-1]
        else:
            return None, steps[::-1]


def _is_module_source(value: ast.AST, aliases: set[str]) -> bool:
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        return value.func.id.endswith("import_tensorrt")
    root, steps = _flatten(value)
    return not steps and root in aliases


def _module_aliases(tree: ast.AST) -> set[str]:
    aliases: set[str] = set()
    for _ in range(2):  # self._trt = trt needs trt known first
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases |= {a.asname or a.name for a in node.names if a.name == "tensorrt"}
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and _is_module_source(node.value, aliases):
                root, steps = _flatten(node.targets[0])
                if root and not steps:
                    aliases.add(root)
    return aliases


def _only(lines: list[str], lineno: int) -> str:
    m = _VERSION_COMMENT.search(lines[lineno - 1])
    return f"{m.group(1)}{m.group(2)}" if m else ""


def _uses_tensorrt(scope: ast.AST, aliases: set[str]) -> bool:
    for node in ast.walk(scope):
        if isinstance(node, ast.Name) and node.id in aliases:
            return True
        if isinstance(node, ast.Import) and any(a.name == "tensorrt" for a in node.names):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.endswith("import_tensorrt"):
            return True
    return False


def scan_source(text: str, file: str = "<source>") -> tuple[list[Chain], dict[str, Chain]]:
    """The TensorRT chains of one module, and the names assigned from TensorRT chains (name -> chain).

    Role names (``engine``, ``cfg``, ...) count only inside top-level functions and classes that touch the
    module (import it, or use a name bound to it): elsewhere ``cfg`` is this project's own config.
    """
    tree, lines = ast.parse(text), text.splitlines()
    aliases = _module_aliases(tree)
    scopes = [n for n in tree.body if _uses_tensorrt(n, aliases)]
    derived: dict[str, Chain] = {}
    chains: list[Chain] = []

    def classify(root, in_scope):
        if root in aliases:
            return "module"
        key = root.removeprefix("self.") if root else root
        return key if in_scope and (key in ROLES or key in derived) else None

    for scope in scopes:  # names assigned from a TensorRT call: cache = cfg.get_timing_cache()
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                root, steps = _flatten(node.value)
                kind, name = classify(root, True), node.targets[0].id
                if kind and steps and name not in ROLES and name not in aliases:
                    derived[name] = Chain(file, node.lineno, kind, tuple(steps), _only(lines, node.lineno))
    for top in tree.body:
        in_scope = top in scopes
        for node in ast.walk(top):
            if isinstance(node, ast.Attribute):
                root, steps = _flatten(node)
                kind = classify(root, in_scope)
                if kind and steps:
                    chains.append(Chain(file, node.lineno, kind, tuple(steps), _only(lines, node.lineno)))
    return chains, derived


def scan(package: Path = PACKAGE) -> tuple[list[Chain], dict[str, Chain]]:
    """Every TensorRT chain in the package (deduplicated), and the derived names of all its modules."""
    chains: dict[tuple, Chain] = {}
    derived: dict[str, Chain] = {}
    for path in sorted(package.glob("*.py")):
        found, names = scan_source(path.read_text(), str(path.relative_to(package.parent)))
        derived.update(names)
        for c in found:
            chains.setdefault((c.root, c.steps, c.only), c)
    return list(chains.values()), derived


# ---------------------------------------------------------------- 2. the real bindings on a CPU


class Unavailable(Exception):
    """A wheel, ``cc`` or the package index is missing: the caller skips, or fails when CI requires the check."""


def wheel_for(version: str, cache: Path = WHEEL_CACHE) -> Path:
    """The bindings wheel of ``version`` for this Python, from the cache or downloaded into it with pip."""
    name = VERSIONS[version].split("==")[0].replace("-", "_")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(cache.glob(f"{name}-{version}-{tag}-*.whl"))
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(cache)]
    proc = subprocess.run([*cmd, VERSIONS[version]], capture_output=True, text=True, timeout=300)
    found = sorted(cache.glob(f"{name}-{version}-{tag}-*.whl"))
    if proc.returncode != 0 or not found:
        raise Unavailable(f"pip download {VERSIONS[version]} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return found[-1]


_PROBE = "import importlib, sys; m = importlib.import_module(sys.argv[1]); print(m.__version__)"
_MISSING_LIB = re.compile(r"(lib[\w+-]+\.so\.\d+): cannot open shared object file")
_UNDEFINED = re.compile(r"undefined symbol: (\w+)")


def _build_placeholders(libdir: Path, sonames: list[str], symbols: list[str]) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise Unavailable("no C compiler (cc) to build the placeholder TensorRT libraries")
    source = libdir / "placeholder.c"
    source.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols) or "int placeholder;\n")
    for i, soname in enumerate(sonames):  # the stub symbols go into the first library; the others are empty
        src = source if i == 0 else libdir / "empty.c"
        if i:
            src.write_text("int placeholder;\n")
        out = libdir / soname
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), f"-Wl,-soname,{soname}", str(src)], check=True)


def prepare_bindings(wheel: Path, workdir: Path) -> tuple[str, dict[str, str]]:
    """Unpack ``wheel`` and build placeholder libraries until it imports: (module name, environment)."""
    site, libdir = workdir / "site", workdir / "lib"
    libdir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    (init,) = [p for p in site.glob("*/__init__.py") if list(p.parent.glob("tensorrt*.so"))]
    module = init.parent.name
    env = {**os.environ, "PYTHONPATH": str(site), "LD_LIBRARY_PATH": str(libdir)}
    sonames: list[str] = []
    symbols: list[str] = []
    for _ in range(40):
        proc = subprocess.run([sys.executable, "-c", _PROBE, module], env=env, capture_output=True, text=True)
        if proc.returncode == 0:
            return module, env
        lib, symbol = _MISSING_LIB.search(proc.stderr), _UNDEFINED.search(proc.stderr)
        if lib and lib.group(1) not in sonames:
            sonames.append(lib.group(1))
        elif symbol and symbol.group(1) not in symbols and sonames:
            symbols.append(symbol.group(1))
        else:
            raise Unavailable(f"{wheel.name} does not import with placeholders: {proc.stderr.strip()[-400:]}")
        sonames.sort(key=lambda s: not s.startswith("libnvinfer.so"))  # stubs in libnvinfer.so.N
        _build_placeholders(libdir, sonames, symbols)
    raise Unavailable(f"{wheel.name}: still not importable after {len(sonames)} libraries, {len(symbols)} symbols")


# ---------------------------------------------------------------- 3. resolve the chains in the real bindings

_RESOLVE = r'''
import importlib, inspect, json, re, sys

trt = importlib.import_module(sys.argv[1])
job = json.load(sys.stdin)
RET = re.compile(r"->\s*([\w.]+)")


def returned(doc):
    """The class a pybind11 signature returns (its first '-> tensorrt.X'), or None."""
    m = RET.search(doc or "")
    name = m.group(1).rsplit(".", 1)[-1] if m else ""
    cls = getattr(trt, name, None)
    return cls if inspect.isclass(cls) else None


def step(obj, attr, called):
    """(found, next object or None when its type is unknown)."""
    if inspect.ismodule(obj):
        if not hasattr(obj, attr):
            return False, None
        value = getattr(obj, attr)
        return True, (value if inspect.isclass(value) and not called else returned(getattr(value, "__doc__", "")))
    try:
        static = inspect.getattr_static(obj, attr)
    except AttributeError:
        return False, None
    if isinstance(static, property):
        return True, returned(static.fget.__doc__ if static.fget else "")
    value = getattr(obj, attr)
    if called:
        return True, returned(getattr(value, "__doc__", ""))
    if inspect.isclass(value):
        return True, value
    return True, type(value) if type(value).__module__ == trt.__name__ + ".tensorrt" else None


def resolve(root, steps, depth=0):
    if root == "module":
        obj = trt
    elif root in job["derived"] and depth < 5:
        d = job["derived"][root]
        obj, missing = resolve(d["root"], d["steps"], depth + 1)
        if missing or obj is None:
            return None, None
    else:
        obj = getattr(trt, job["roles"][root], None)
        if obj is None:
            return None, f"class {job['roles'][root]}"
    for attr, called in steps:
        if obj is None:
            return None, None  # type unknown from here on: not checked further
        found, nxt = step(obj, attr, called)
        if not found:
            return None, f"{getattr(obj, '__name__', obj)}.{attr}"
        obj = nxt
    return obj, None


out = []
for c in job["chains"]:
    _, missing = resolve(c["root"], c["steps"])
    out.append(missing)
print(json.dumps({"version": trt.__version__, "missing": out}))
'''


def _applies(only: str, version: str) -> bool:
    """Whether a chain marked ``# tensorrt: <11`` / ``>=11`` (or unmarked) applies to ``version``."""
    m = re.fullmatch(r"(<|>=)(\d+)", only)
    if not m:
        return True
    have = int(version.split(".")[0])
    return have < int(m.group(2)) if m.group(1) == "<" else have >= int(m.group(2))


def check(chains: list[Chain], derived: dict[str, Chain], module: str, env: dict[str, str]) -> tuple[str, list[str]]:
    """(the bindings' version, one line per chain it lacks: ``file:line chain: no Class.attr``)."""
    job = {
        "roles": ROLES,
        "chains": [{"root": c.root, "steps": c.steps} for c in chains],
        "derived": {k: {"root": c.root, "steps": c.steps} for k, c in derived.items()},
    }
    proc = subprocess.run(
        [sys.executable, "-c", _RESOLVE, module], input=json.dumps(job), env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"resolving the chains failed: {proc.stderr.strip()[-1000:]}")
    result = json.loads(proc.stdout)
    version = result["version"]
    lacking = [
        f"{c.file}:{c.line} {c.text()}: TensorRT {version} has no {missing}"
        for c, missing in zip(chains, result["missing"])
        if missing and _applies(c.only, version)
    ]
    return version, lacking


def main() -> int:
    chains, derived = scan()
    for c in sorted(chains, key=lambda c: (c.file, c.line)):
        print(f"{c.file}:{c.line}  {c.text()}  {c.only}")
    bad = 0
    for version in VERSIONS:
        with tempfile.TemporaryDirectory() as tmp:
            module, env = prepare_bindings(wheel_for(version), Path(tmp))
            got, lacking = check(chains, derived, module, env)
        print(f"TensorRT {got}: {len(chains)} chains, {len(lacking)} missing")
        for line in lacking:
            print("  " + line)
        bad += len(lacking)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
