"""The import contract: one package per pipeline stage, layers that import one way, a pure model.

The layers, from the top (a module may import its own layer and the layers below it, never above):

====  ===============================================================================================
 0    entry points: ``flows``, ``a2mae.cli``, ``a2mae.__main__``, ``a2mae.testing`` (test support)
 1    ``a2mae.benchmark`` (scores encoders with the stages below: embeddings, probes, fine-tuning),
      ``a2mae.evidence`` (the report of ``make evidence``)
 2    ``a2mae.predict``
 3    ``a2mae.evaluate``
 4    ``a2mae.finetune``
 5    ``a2mae.pretrain``
 6    ``a2mae.registry``
 7    ``a2mae.tasks`` (one module per downstream task: its data, head, loss, metrics, outputs; the
      registry of tasks that fine-tuning, evaluation, the registry and predict ask)
 8    ``a2mae.stssd``
 9    ``a2mae.collect`` (gathers scenes from a STAC API into the catalog ingest writes)
 10   ``a2mae.ingest``
 11   shared services of the stages: ``tracking``, ``checkpoint``, ``normstats``, ``executor``,
      ``services``, ``dvc``, ``samples``
 12   ``a2mae.models`` (pure torch + timm)
 13   base: ``a2mae.types``, ``a2mae.sensors``, ``a2mae.io``, ``a2mae.config``, ``a2mae.errors``,
      ``a2mae.console`` (what commands print, progress bars), ``a2mae.logs`` (library logs to a file)
====  ===============================================================================================

Besides the layers: ``a2mae`` imports no Prefect; ``a2mae.models`` imports no file I/O, Ray, MLflow or
Prefect; no module imports another that (directly or not) imports it back. Every import counts,
including those inside functions: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[str, ...]] = [
    ("flows", "a2mae.cli", "a2mae.__main__", "a2mae.testing"),
    ("a2mae.benchmark", "a2mae.evidence"),
    ("a2mae.predict",),
    ("a2mae.evaluate",),
    ("a2mae.finetune",),
    ("a2mae.pretrain",),
    ("a2mae.registry",),
    ("a2mae.tasks",),
    ("a2mae.stssd",),
    ("a2mae.collect",),
    ("a2mae.ingest",),
    (
        "a2mae.tracking",
        "a2mae.checkpoint",
        "a2mae.normstats",
        "a2mae.executor",
        "a2mae.services",
        "a2mae.dvc",
        "a2mae.samples",
    ),
    ("a2mae.models",),
    (
        "a2mae.types",
        "a2mae.sensors",
        "a2mae.io",
        "a2mae.config",
        "a2mae.errors",
        "a2mae.console",
        "a2mae.logs",
        "a2mae._tvshim",
        "a2mae",
    ),
]

#: Top-level packages ``a2mae.models`` must never import (file I/O, distribution, tracking, orchestration).
MODEL_FORBIDDEN = ("rasterio", "s3fs", "fsspec", "boto3", "ray", "mlflow", "prefect", "a2mae.io", "yaml")


def module_name(path: Path, root: Path) -> str:
    """``a2mae/stssd/run.py`` -> ``a2mae.stssd.run`` (packages by their ``__init__``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, module: str) -> Iterable[tuple[str, int]]:
    """Every imported module name of a file (absolute, relative ones resolved), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            for alias in node.names:  # `from a2mae.stssd import chips` imports the module a2mae.stssd.chips
                yield f"{name}.{alias.name}", node.lineno


def collect(root: Path) -> dict[str, tuple[Path, list[tuple[str, int]]]]:
    """Modules of ``a2mae`` and ``flows`` under ``root`` with their imports."""
    out = {}
    for top in ("a2mae", "flows"):
        for path in sorted((root / top).rglob("*.py")):
            mod = module_name(path, root)
            out[mod] = (path, list(imports_of(path, mod)))
    return out


def layer_of(module: str) -> int | None:
    """Rank of the layer a module belongs to (longest matching prefix), None for outside modules."""
    best: tuple[int, int] | None = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    return best[0] if best else None


def resolve(name: str, modules: set[str]) -> str | None:
    """The project module an imported name refers to (``a2mae.stssd.chips.read`` -> the module).

    ``from a2mae.models import geo`` depends on the module ``a2mae.models.geo`` only; the package's
    ``__init__`` runs first but is no dependency of the importer.
    """
    full = name
    while "." in name:  # the bare top-level package matches only itself
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return full if full in modules else None


def violations(root: Path) -> list[str]:
    """Every breach of the contract in the tree at ``root``, one line each."""
    found = collect(root)
    modules = set(found)
    edges: dict[str, set[str]] = {m: set() for m in modules}
    out: list[str] = []
    for mod, (path, imports) in found.items():
        where = path.relative_to(root)
        rank = layer_of(mod)
        for name, line in imports:
            top = name.split(".")[0]
            if mod.startswith("a2mae") and top == "prefect":
                out.append(f"{where}:{line}: the library imports Prefect ({name})")
            if mod.startswith("a2mae.models") and any(
                name == f or name.startswith(f + ".") for f in MODEL_FORBIDDEN
            ):
                out.append(f"{where}:{line}: model code imports {name} (no file I/O, Ray, MLflow, Prefect)")
            target = resolve(name, modules)
            if target is not None and target != mod and "a2mae" not in (mod, target):
                edges[mod].add(target)  # the root package only installs the shim
            if target is None and top in ("a2mae", "flows"):
                target = name  # a module this tree lacks still has its layer
            if target is None or target == mod:
                continue
            trank = layer_of(target)
            if rank is not None and trank is not None and trank < rank:
                out.append(f"{where}:{line}: {mod} (layer {rank}) imports {target} (layer {trank}, above)")
    out.extend(cycles(edges))
    return sorted(set(out))


def cycles(edges: dict[str, set[str]]) -> list[str]:
    """Import cycles between modules (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[str] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(f"import cycle: {' <-> '.join(sorted(comp))}")

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


# ----------------------------------------------------------------------------------------------- tests
def test_the_repository_keeps_the_import_contract():
    found = violations(REPO)
    assert not found, "\n".join(found)


def test_every_library_module_belongs_to_a_layer():
    unplaced = [m for m in collect(REPO) if layer_of(m) is None]
    assert not unplaced, f"add these to LAYERS in tests/test_architecture.py: {unplaced}"


def test_every_stage_is_a_package_of_its_own():
    for stage in ("ingest", "stssd", "pretrain", "finetune", "evaluate", "registry", "predict", "benchmark"):
        assert (REPO / "a2mae" / stage / "__init__.py").is_file(), stage


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in {"a2mae/__init__.py": "", "flows/__init__.py": "", **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"a2mae/models/__init__.py": "import mlflow\n"}, "model code imports mlflow"),
        ({"a2mae/models/__init__.py": "from a2mae.io import storage\n"}, "model code imports a2mae.io"),
        ({"a2mae/stssd/__init__.py": "from prefect import flow\n"}, "the library imports Prefect"),
        (
            {"a2mae/models/__init__.py": "", "a2mae/models/a.py": "from a2mae.pretrain import loop\n"},
            "imports a2mae.pretrain",
        ),
        (
            {
                "a2mae/ingest/__init__.py": "",
                "a2mae/ingest/a.py": "def f():\n    from a2mae.stssd import run\n",
            },
            "(layer 8, above)",
        ),
        (
            {
                "a2mae/sensors/__init__.py": "",
                "a2mae/sensors/a.py": "from a2mae.sensors import b\n",
                "a2mae/sensors/b.py": "def f():\n    from . import a\n",
            },
            "import cycle: a2mae.sensors.a <-> a2mae.sensors.b",
        ),
        (
            {"a2mae/predict/__init__.py": "from a2mae.benchmark import stats\n"},
            "a2mae.predict (layer 2) imports a2mae.benchmark.stats (layer 1, above)",
        ),
    ],
)
def test_the_checker_finds_each_kind_of_breach(tmp_path, files, expected):
    found = violations(_tree(tmp_path, files))
    assert any(expected in line for line in found), found


def test_the_checker_accepts_downward_imports(tmp_path):
    root = _tree(
        tmp_path,
        {
            "a2mae/stssd/__init__.py": "from a2mae.ingest import catalog\nimport numpy\n",
            "a2mae/ingest/__init__.py": "",
            "a2mae/ingest/catalog.py": "from a2mae.errors import A2maeError\n",
            "a2mae/errors.py": "",
            "flows/tile.py": "from prefect import flow\nfrom a2mae.stssd import run\n",
        },
    )
    assert violations(root) == []


def test_functions_are_named_steps_of_at_most_80_lines():
    """Long functions become named steps (as facebookresearch/mae writes its model and engine)."""
    long = []
    for path in sorted((REPO / "a2mae").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "split into named steps: " + "; ".join(long)


# ------------------------------------------------------------------------------ tasks are asked, not named
#: Names of the built-in tasks and of the encoder's outputs in predict (the strings generic code must
#: not compare against: it asks the task object, :mod:`a2mae.tasks`).
TASK_NAMES = ("classification", "segmentation", "change_detection", "embeddings")


def _str_constants(node: ast.AST) -> list[str]:
    """String constants of an expression, looking into tuples, lists and sets."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for e in node.elts for s in _str_constants(e)]
    return []


def task_name_comparisons(root: Path) -> list[str]:
    """Comparisons of a task variable with a task name outside ``a2mae/tasks``.

    A task variable is an operand whose source names a task (``task``, ``model.task``, ``spec.task``,
    ``self.task_name``); the forms are ``x == "segmentation"``, ``x in ("a", "b")`` and
    ``match x: case "change_detection"``. Other vocabularies that share a word (a benchmark's probe
    ``kind == "segmentation"``) are not task variables.
    """
    out = []
    for top in ("a2mae", "flows"):
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root)
            if rel.parts[:2] == ("a2mae", "tasks"):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Compare):
                    operands = [node.left, *node.comparators]
                elif isinstance(node, ast.Match):
                    operands = [node.subject, *(c.pattern for c in node.cases)]
                else:
                    continue
                names = {s for e in operands for s in _str_constants(_pattern_value(e))} & set(TASK_NAMES)
                subjects = [e for e in operands if not _str_constants(_pattern_value(e))]
                if names and any("task" in ast.unparse(e).lower() for e in subjects):
                    out.append(f"{rel}:{node.lineno}: compares a task with {sorted(names)[0]!r}")
    return out


def _pattern_value(node: ast.AST) -> ast.AST:
    """The value of a ``case "x":`` pattern (other nodes as they are)."""
    if isinstance(node, ast.MatchValue):
        return node.value
    if isinstance(node, ast.MatchOr):
        return ast.Tuple([_pattern_value(p) for p in node.patterns])
    return node


def test_no_task_name_is_compared_outside_the_tasks_package():
    found = task_name_comparisons(REPO)
    assert not found, "ask the task object (a2mae.tasks.get(name)) instead:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "code",
    [
        'def f(task):\n    return task == "segmentation"\n',
        'def f(spec):\n    return spec.task in ("segmentation", "change_detection")\n',
        'def f(m):\n    return "embeddings" != m.task\n',
        'def f(task):\n    match task:\n        case "classification":\n            return 1\n',
    ],
)
def test_the_task_name_check_finds_each_form(tmp_path, code):
    root = _tree(tmp_path, {"a2mae/predict/x.py": code, "a2mae/tasks/y.py": code})
    found = task_name_comparisons(root)
    assert len(found) == 1 and found[0].startswith("a2mae/predict/x.py:"), found


def test_the_task_name_check_leaves_other_vocabularies_alone(tmp_path):
    code = 'def f(kind):\n    return kind == "segmentation"\n'
    assert task_name_comparisons(_tree(tmp_path, {"a2mae/benchmark/x.py": code})) == []


def test_the_built_in_tasks_are_modules_of_the_tasks_package():
    from a2mae import tasks

    assert tasks.names()[:3] == ("classification", "segmentation", "change_detection")
    for name in tasks.names()[:3]:
        assert type(tasks.get(name)).__module__.startswith("a2mae.tasks."), name
    assert len({type(tasks.get(n)).__module__ for n in tasks.names()[:3]}) == 3


# ------------------------------------------------------------------- each stage takes its own section
#: The most library functions (outside ``a2mae/cli/`` and ``a2mae/config.py``) that may take the whole
#: ``Params``: the stage entry points the CLI and the flows call, the two ``*Stage.of`` that read a
#: stage's sections once, the checks across sections, and the ablation's variant parameters.
MAX_PARAMS_FUNCTIONS = 15


def _mentions_params(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    for n in ast.walk(annotation):
        if isinstance(n, ast.Name) and n.id == "Params":
            return True
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and "Params" in n.value.split("|"):
            return True
    return False


def params_functions(root: Path) -> list[str]:
    """Library functions with a parameter annotated ``Params`` (but ``a2mae/cli/``, ``a2mae/config.py``)."""
    out = []
    for path in sorted((root / "a2mae").rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[1] == "cli" or rel.as_posix() == "a2mae/config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                if any(_mentions_params(a.annotation) for a in args):
                    out.append(f"{rel}:{node.lineno} {node.name}")
    return out


def test_at_most_15_library_functions_take_the_whole_params():
    found = params_functions(REPO)
    assert len(found) <= MAX_PARAMS_FUNCTIONS, (
        f"{len(found)} library functions take Params (at most {MAX_PARAMS_FUNCTIONS}); pass the section "
        "a step needs instead:\n" + "\n".join(found)
    )


def test_the_params_count_sees_every_form(tmp_path):
    root = _tree(
        tmp_path,
        {
            "a2mae/stssd/x.py": "def a(p: Params): ...\ndef b(*, p: 'Params'): ...\n"
            "class C:\n    def m(self, p: Params | None): ...\ndef d(p: TileConfig): ...\n",
            "a2mae/cli/y.py": "def e(p: Params): ...\n",
            "a2mae/config.py": "def f(p: Params): ...\n",
        },
    )
    assert [line.split()[-1] for line in params_functions(root)] == ["a", "b", "m"]


# -------------------------------------------------------------------------------- one errors.py a stage
#: Stage packages with errors of their own, and their base error (the first class of their errors.py).
STAGE_ERRORS = {
    "ingest": "IngestError",
    "collect": "CollectError",
    "stssd": "StssdError",
    "tasks": "DatasetError",
    "pretrain": "PretrainError",
    "finetune": "FinetuneError",
    "registry": "RegistryError",
    "predict": "PredictError",
}


def test_each_stage_declares_its_errors_in_one_errors_module_on_one_base():
    import importlib
    import inspect

    from a2mae.errors import A2maeError

    for stage, base_name in STAGE_ERRORS.items():
        mod = importlib.import_module(f"a2mae.{stage}.errors")
        base = getattr(mod, base_name)
        assert issubclass(base, A2maeError), base_name
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__:
                assert issubclass(cls, base), f"a2mae.{stage}.errors.{name} does not derive from {base_name}"
        for path in sorted((REPO / "a2mae" / stage).rglob("*.py")):
            other = importlib.import_module(module_name(path, REPO))
            for name, cls in inspect.getmembers(other, inspect.isclass):
                if cls.__module__ == other.__name__ and issubclass(cls, A2maeError):
                    assert path.name == "errors.py", f"{path.relative_to(REPO)}: move {name} to errors.py"
