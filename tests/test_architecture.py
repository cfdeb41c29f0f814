"""Static checks of the code's structure (``cluster/`` and ``train/``), read with ``ast``.

Nothing of the project is imported: each file is parsed from disk. Every test fails with
the list of every offending place (``path:line``), so one run shows all that is left to do.

What counts as an import
------------------------
Every ``import`` and ``from ... import`` statement anywhere in a file: at module level,
inside functions and methods (lazy imports still run), inside ``try``/``if``. Relative
imports are resolved against the importing module. ``from pkg import name`` imports the
module ``pkg.name`` when ``pkg/name.py`` (or ``pkg/name/__init__.py``) is a project file,
else (``name`` is an attribute of ``pkg``) the module ``pkg``. ``import a.b.c`` imports
``a.b.c``. Dynamic imports (``importlib.import_module(...)``) are not statements and are
not seen. Imports under ``if TYPE_CHECKING:`` never run; they are seen by every check but the
cycle check (see :func:`test_import_graph_has_no_cycle`).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict, deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cluster", "train")
MAX_FUNCTION_LINES = 80
SCHEDULER_KINDS = frozenset({"slurm", "pbs", "pbspro", "torque", "local"})


@dataclass(frozen=True)
class Import:
    path: str  # repo-relative file
    line: int
    importer: str  # dotted module name of the file
    target: str  # dotted module imported (see the module docstring)
    type_checking: bool  # under ``if TYPE_CHECKING:``

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


# ------------------------------------------------------------------ reading the code


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def _files() -> dict[str, Path]:
    """Every project module: dotted name -> file."""
    files = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                files[_module_name(path)] = path
    assert files, f"no Python files under {REPO} / {PACKAGES}"
    return files


@lru_cache(maxsize=None)
def _tree(module: str) -> ast.Module:
    path = _files()[module]
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(module: str) -> str:
    return _files()[module].relative_to(REPO).as_posix()


def _is_package(module: str) -> bool:
    return _files()[module].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve_from(module: str, node: ast.ImportFrom) -> str:
    """The package a ``from`` import reads from, relative levels resolved."""
    if not node.level:
        return node.module or ""
    package = module if _is_package(module) else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level - 1 > len(parts) - 1:
        raise AssertionError(f"{_rel(module)}:{node.lineno}: relative import beyond the top-level package")
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = _resolve_from(module, node)
    out = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        out.append(candidate if alias.name != "*" and candidate in _files() else base)
    return list(dict.fromkeys(out))  # `from m import a, b, c` imports m once


@lru_cache(maxsize=None)
def _imports() -> tuple[Import, ...]:
    """Every import statement of every project module (see the module docstring)."""
    found: list[Import] = []

    def visit(module: str, node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _targets(module, node):
                found.append(Import(_rel(module), node.lineno, module, target, type_checking))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(module, child, True)
            for child in node.orelse:
                visit(module, child, type_checking)
            visit(module, node.test, type_checking)
            return
        for child in ast.iter_child_nodes(node):
            visit(module, child, type_checking)

    for module in _files():
        visit(module, _tree(module), False)
    return tuple(found)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _by_place(place: str) -> tuple[str, int, str]:
    path, _, rest = place.partition(":")
    line, _, text = rest.partition(":")
    return path, int(line) if line.isdigit() else 0, text


def _fail(what: str, places: list[str]) -> None:
    if places:
        places = sorted(places, key=_by_place)
        pytest.fail(f"{what} ({len(places)}):\n  " + "\n  ".join(places), pytrace=False)


# ------------------------------------------------------------------ a. no import cycle


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _import_graph() -> dict[str, dict[str, list[str]]]:
    """importer -> imported -> ['path:line (how)', ...], project modules only, TYPE_CHECKING left out."""
    modules = _files()
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for imp in _imports():
        if imp.type_checking or imp.target not in modules:
            continue
        graph[imp.importer][imp.target].append(imp.where)
        own = set(_ancestors(imp.importer)) | {imp.importer}
        for parent in _ancestors(imp.target):
            if parent in modules and parent not in own:
                graph[imp.importer][parent].append(f"{imp.where} (importing {imp.target} runs {_rel(parent)})")
    return graph


def _strongly_connected(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, {})):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, {}):
                groups.append(sorted(group))

    for node in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if node not in index:
            connect(node)
    return sorted(groups)


def _shortest_cycle(graph: dict[str, dict[str, list[str]]], start: str, members: set[str]) -> list[str]:
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph.get(node, {})):
            if succ not in members:
                continue
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if succ not in previous:
                previous[succ] = node
                queue.append(succ)
    raise AssertionError(f"no cycle through {start}")  # cannot happen inside a strongly connected group


def test_import_graph_has_no_cycle():
    """The modules of ``cluster/`` and ``train/`` import each other without a cycle.

    Edges: every import statement (see the module docstring) from a project module to a
    project module, except those under ``if TYPE_CHECKING:``, which never run and so cannot
    make an import cycle (the other checks do count them).

    Parent packages: ``import a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first, so
    an import of ``a.b.c`` is also an edge to each of its parent packages ``a`` and ``a.b`` --
    except a parent that is the importer itself or one of the importer's own parent packages:
    those are already being imported when the importer runs (a package's ``__init__`` that
    imports its own submodules, which import their siblings, is not a cycle). An explicit
    import of one's own package (``from cluster.backends import JobInfo`` inside
    ``cluster/backends/slurm.py``) is an ordinary edge and does count.

    Each cycle group (strongly connected modules) is shown with one shortest cycle and every
    import between its members.
    """
    graph = _import_graph()
    report = []
    groups = _strongly_connected(graph)
    for group in groups:
        members = set(group)
        cycle = _shortest_cycle(graph, group[0], members)
        report.append(f"cycle group {', '.join(group)}; shortest cycle: {' -> '.join(cycle)}")
        for importer in group:
            for target in sorted(graph[importer]):
                if target in members:
                    for where in graph[importer][target]:
                        report.append(f"    {where}: {importer} -> {target}")
    if groups:
        pytest.fail(f"import cycles among the project's modules ({len(groups)} group(s)):\n  " + "\n  ".join(report),
                    pytrace=False)


# ------------------------------------------------------------------ b. cluster -> train.contract only


JOB_SIDE = {("cluster.job", "train.trainer"), ("cluster.job", "train.device")}
"""The one exception: the callable that submitit runs inside the job (``cluster.job.TrainJob``)
imports the trainer (and its device note, for the local executor that allocates no GPUs) there,
lazily, inside ``__call__``; the login path never runs those lines."""


def test_cluster_imports_only_train_contract_and_train_nothing_of_cluster():
    """``cluster`` may import ``train.contract`` (and its submodules) of ``train``, nothing
    else of it (but for :data:`JOB_SIDE`); ``train`` imports nothing of ``cluster``."""
    places = []
    for imp in _imports():
        if _within(imp.importer, "cluster") and _within(imp.target, "train") and not _within(
                imp.target, "train.contract") and (imp.importer, imp.target) not in JOB_SIDE:
            places.append(f"{imp.where}: {imp.importer} imports {imp.target} (only train.contract is allowed)")
        if _within(imp.importer, "train") and _within(imp.target, "cluster"):
            places.append(f"{imp.where}: {imp.importer} imports {imp.target} (train imports nothing of cluster)")
    _fail("imports across the cluster/train boundary", places)


# ------------------------------------------------------------------ c. print only in the CLI


def test_no_print_in_cluster_outside_cli():
    """Only ``cluster/cli.py`` writes to the terminal with ``print(...)`` (or ``builtins.print``)."""
    places = []
    for module in _files():
        if not _within(module, "cluster") or module == "cluster.cli":
            continue
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.Call) and (
                    (isinstance(node.func, ast.Name) and node.func.id == "print")
                    or (isinstance(node.func, ast.Attribute) and node.func.attr == "print"
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "builtins")):
                places.append(f"{_rel(module)}:{node.lineno}: print(...)")
    _fail("print calls in cluster/ outside cluster/cli.py", places)


# ------------------------------------------------------------------ d. scheduler kinds stay in backends


def _kind_literals(node: ast.expr) -> list[str]:
    """Scheduler-kind strings in an operand: a string constant, or the elements of a
    tuple/list/set literal (or of ``set(...)``/``frozenset(...)``/``tuple(...)`` of one)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value in SCHEDULER_KINDS else []
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [kind for elt in node.elts for kind in _kind_literals(elt)]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("set", "frozenset", "tuple", "list") and len(node.args) == 1):
        return _kind_literals(node.args[0]) if not isinstance(node.args[0], ast.Constant) else []
    return []


def _pattern_literals(pattern: ast.pattern) -> list[str]:
    if isinstance(pattern, ast.MatchValue):
        return _kind_literals(pattern.value)
    if isinstance(pattern, ast.MatchOr):
        return [kind for p in pattern.patterns for kind in _pattern_literals(p)]
    if isinstance(pattern, ast.MatchAs) and pattern.pattern is not None:
        return _pattern_literals(pattern.pattern)
    return []


def test_no_scheduler_kind_compared_outside_backends():
    """Outside ``cluster/backends/`` no code compares anything with a scheduler kind
    ("slurm", "pbs", "pbspro", "torque", "local"): no ``==``/``!=``/``is``/``in``/``not in``
    with one of these strings on either side, or inside a tuple/list/set literal operand
    (``kind in ("pbs", "torque")``), and no ``case "slurm":`` in a ``match``. Ask the
    backend registry (``cluster.backends``) instead."""
    places = []
    for module in _files():
        if _within(module, "cluster.backends"):
            continue
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.Compare):
                kinds = [k for operand in (node.left, *node.comparators) for k in _kind_literals(operand)]
                if kinds:
                    places.append(f"{_rel(module)}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.match_case):
                kinds = _pattern_literals(node.pattern)
                if kinds:
                    places.append(f"{_rel(module)}:{node.pattern.lineno}: case {ast.unparse(node.pattern)}")
    _fail("scheduler kinds compared outside cluster/backends/", places)


def test_backends_are_reached_through_the_registry():
    """Outside ``cluster/backends/`` modules import ``cluster.backends`` (the registry) and
    ``cluster.backends.base``, no other module of that package (``cluster.backends.slurm``,
    ``cluster.backends.pbs...``, ``from cluster.backends import slurm``)."""
    allowed = {"cluster.backends", "cluster.backends.base"}
    places = [
        f"{imp.where}: {imp.importer} imports {imp.target}"
        for imp in _imports()
        if not _within(imp.importer, "cluster.backends") and _within(imp.target, "cluster.backends")
        and imp.target not in allowed
    ]
    _fail("backend modules imported outside cluster/backends/ (use the registry)", places)


# ------------------------------------------------------------------ e. short functions


def test_no_function_longer_than_80_lines():
    """No function, method or nested function in ``cluster/`` or ``train/`` spans more than
    80 lines (``def`` line to last line; decorators not counted)."""
    places = []
    for module in _files():
        for node in ast.walk(_tree(module)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    places.append(f"{_rel(module)}:{node.lineno}: {node.name} ({length} lines)")
    _fail(f"functions longer than {MAX_FUNCTION_LINES} lines", places)


# ------------------------------------------------------------------ f. train.contract: standard library only


def test_train_contract_imports_only_the_standard_library():
    """``train/contract/`` imports the standard library and ``train.contract`` itself, nothing else
    (no torch, no numpy, no other module of ``train``): ``cluster`` imports it on login nodes."""
    places = [
        f"{imp.where}: {imp.importer} imports {imp.target}"
        for imp in _imports()
        if _within(imp.importer, "train.contract") and not _within(imp.target, "train.contract")
        and imp.target.partition(".")[0] not in sys.stdlib_module_names
    ]
    _fail("non-standard-library imports in train/contract/", places)


# ------------------------------------------------------------------ g. cluster.remote: one seam, nothing heavy


def test_remote_hosts_are_reached_through_one_seam_and_import_nothing_heavy():
    """``cluster/remote/`` (running commands on a login node over ssh) is entered from the CLI's one
    dispatch (``cluster.cli``) and the job's snapshot check (``cluster.job`` -> ``cluster.remote.helper``);
    it imports neither torch, numpy nor submitit; ``cluster.remote.helper`` runs on the remote side
    as ``python3 -c`` before anything is installed there, so it imports the standard library only."""
    places = []
    for imp in _imports():
        inside = _within(imp.importer, "cluster.remote")
        if inside and imp.target.partition(".")[0] in ("torch", "numpy", "submitit"):
            places.append(f"{imp.where}: {imp.importer} imports {imp.target}")
        if imp.importer == "cluster.remote.helper" and imp.target.partition(".")[0] not in sys.stdlib_module_names:
            places.append(f"{imp.where}: cluster.remote.helper imports {imp.target} (standard library only)")
        if _within(imp.target, "cluster.remote") and not inside and not (
                imp.importer == "cluster.cli" or (imp.importer == "cluster.job" and imp.target == "cluster.remote.helper")):
            places.append(f"{imp.where}: {imp.importer} imports {imp.target} (only cli's dispatch and the job's check)")
    _fail("imports across the remote seam", places)


# ------------------------------------------------------------------ h. run directories: one reading layer

RUN_DIR_READERS = ("cluster.status", "cluster.logs", "cluster.diagnose", "cluster.runs", "cluster.submit",
                   "cluster.report", "cluster.timeline", "train.runfiles", "train.checkpoint")
"""Modules that read run-directory files: only through :mod:`train.contract.rundir` (no links
followed, FIFOs never waited on, sizes capped), never with a plain ``open``."""
PLAIN_READS = frozenset({"open", "read_text", "read_bytes", "glob", "rglob", "copyfile", "copy2", "load"})


def test_run_directory_files_are_read_through_the_one_layer():
    """No ``open(...)``, ``Path.read_text/read_bytes``, ``glob``, ``shutil.copy*`` or ``json.load``
    in the modules that read run directories (``os.open`` with ``dir_fd`` lives in the layer)."""
    places = []
    for module in RUN_DIR_READERS:
        for node in ast.walk(_tree(module)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            if name in PLAIN_READS and owner not in ("os", "rundir", "torch", "yaml", "self") \
                    and not (name == "load" and owner != "json"):
                places.append(f"{_rel(module)}:{node.lineno}: {owner + '.' if owner else ''}{name}(...)")
    _fail("run-directory files read around train.contract.rundir", places)


# ------------------------------------------------------------------ the checker itself


def test_the_checker_sees_the_project():
    """Guards against a checker that passes because it reads nothing."""
    modules = _files()
    assert "cluster.cli" in modules and "train.contract" in modules, sorted(modules)
    assert any(_within(imp.importer, "cluster") for imp in _imports())
