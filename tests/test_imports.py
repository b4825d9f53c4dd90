"""No import cycle inside ``tvlens/``: an AST graph of every import (module level and inside
functions, which are cycles too, only deferred), with an edge to a package's ``__init__`` when a
module imports from another package (importing ``a.b.c`` runs ``a/b/__init__.py``). Imports
made at run time from a string count too: ``"tvlens.a.b:function"`` (the CLI's commands, the
registries' methods; an f-string of the module's own constants included). (A lazy package's
``_NAMES`` are not counted: they run when a name is read from the package, whose ``__init__``
has long finished by then.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "tvlens"

# Cycles that are known and owned elsewhere; remove an entry when its cycle is gone.
KNOWN_CYCLES: list[set[str]] = []


def module_names(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


RUNTIME_TARGET = re.compile(r"^(tvlens(?:\.\w+)*):[\w.]+$")


def string_constants(tree: ast.Module) -> dict[str, str]:
    """The module's own ``NAME = "text"`` constants (what its f-strings may use)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                out |= {t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)}
    return out


def runtime_imports(tree: ast.Module) -> list[str]:
    """The modules named by strings imported at run time: ``"tvlens.a.b:function"`` and
    ``f"{_BASE}:Class"`` (``_BASE`` a constant of the module)."""
    consts = string_constants(tree)
    found = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant):
                    parts.append(str(v.value))
                elif isinstance(v.value, ast.Name) and v.value.id in consts:
                    parts.append(consts[v.value.id])
                else:
                    break
            else:
                text = "".join(parts)
        if text and (m := RUNTIME_TARGET.match(text)):
            found.append(m.group(1))
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    mods = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        targets: set[str] = set()
        tree = ast.parse(path.read_text())
        strings = [[t] for t in runtime_imports(tree)]
        for node in [*ast.walk(tree), *strings]:
            if isinstance(node, list):  # a module named by a string, imported at run time
                names = node
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in names:
                if target not in mods:
                    continue
                targets.add(target)
                parts = target.split(".")
                for i in range(2, len(parts)):  # the packages whose __init__ runs first
                    parent = ".".join(parts[:i])
                    if parent not in ancestors:
                        targets.add(parent)
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_inside_tvlens():
    graph = import_graph(ROOT)
    assert "tvlens.probing.emergence" in graph and len(graph) > 40
    unknown = [c for c in cycles(graph) if c not in KNOWN_CYCLES]
    assert not unknown, f"import cycles: {[sorted(c) for c in unknown]}"


def test_checker_finds_a_cycle_through_a_package_init(tmp_path):
    pkg = tmp_path / "tvlens"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from tvlens.a.x import f\n")
    (pkg / "a" / "x.py").write_text("def f():\n    from tvlens.b.y import g\n")
    (pkg / "b" / "__init__.py").write_text("")
    (pkg / "b" / "y.py").write_text("from ..a import x\ng = 1\n")  # b.y -> a (init) -> a.x -> b.y
    graph = import_graph(pkg)
    assert graph["tvlens.b.y"] == {"tvlens.a", "tvlens.a.x"}
    assert cycles(graph) == [{"tvlens.a", "tvlens.a.x", "tvlens.b.y"}]
    (pkg / "a" / "x.py").write_text("def f():\n    pass\n")
    assert cycles(import_graph(pkg)) == []


# The stages in their import order: each package (or module at tvlens/'s top level) imports only
# those before it. The top-level modules every stage shares come first, the demo package (an
# application over every stage) last before the CLI; runs (run folders, checkpoints on disk,
# JSON) serves all the packages. ARCHITECTURE.md draws this line
# (test_architecture_draws_the_stage_line).
STAGES = ["errors", "runtime", "names", "runs", "results", "frames", "tasks", "plotting", "models",
          "training", "evaluation", "patching", "extraction", "injection", "probing", "atv",
          "compare", "experiments", "demo", "cli"]  # fmt: skip


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``tvlens.X.*`` -> ``tvlens.Y.*`` edges collapsed to packages X -> Y (X != Y); a module
    at the top level (``tvlens.errors``) is its own node (``tvlens/__init__.py`` is none)."""

    def package(mod: str) -> str | None:
        parts = mod.split(".")
        return parts[1] if len(parts) > 1 else None

    out: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        src = package(mod)
        if src is None:
            continue
        out.setdefault(src, set())
        out[src] |= {d for t in targets if (d := package(t)) not in (None, src)}
    return out


def test_no_cycle_between_packages_and_stages_in_one_line():
    """A package-level cycle (probing -> injection -> probing through two different modules)
    is no module cycle, but it still ties two stages together: none is allowed, and every
    import goes from a later stage to an earlier one."""
    pkgs = package_graph(import_graph(ROOT))
    assert not cycles(pkgs), f"package cycles: {[sorted(c) for c in cycles(pkgs)]}"
    assert set(pkgs) == set(STAGES), "a new package: give it its place in STAGES"
    back = [(a, b) for a, deps in pkgs.items() for b in deps if STAGES.index(b) > STAGES.index(a)]
    assert not back, f"imports from a later stage: {back}"


def test_runtime_strings_are_imports(tmp_path):
    """A ``"module:function"`` string is an import made later: a cycle through one counts."""
    pkg = tmp_path / "tvlens"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text('_B = "tvlens.b"\nFN = f"{_B}:g"\n')
    (pkg / "b.py").write_text('RUN = "tvlens.a.x:f"\nNOT = "tvlens is a toolkit"\n')
    graph = import_graph(pkg)
    assert graph["tvlens.a.x"] == {"tvlens.b"} and graph["tvlens.b"] == {"tvlens.a", "tvlens.a.x"}
    assert cycles(graph) == [{"tvlens.a.x", "tvlens.b"}]
    assert sorted(package_graph(graph)) == ["a", "b"]  # a top-level module is a node


def test_the_cli_commands_are_in_the_graph():
    """The CLI names its commands' functions as strings: each one is an edge of the graph."""
    graph = import_graph(ROOT)
    assert {"tvlens.demo", "tvlens.evaluation.runner", "tvlens.compare.run"} <= graph[
        "tvlens.cli.main"
    ]
    assert "tvlens.extraction.function_vectors" in graph["tvlens.extraction.methods"]


def test_architecture_draws_the_stage_line():
    """ARCHITECTURE.md's stage diagram (its first code block: a stage name at the start of a
    line, its description in parentheses) lists the stages in STAGES's order."""
    text = (ROOT.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    diagram = text.split("```")[1]
    drawn = re.findall(r"^ {1,6}([a-z_]+) {2,}\(", diagram, flags=re.M)
    assert drawn == STAGES


def test_package_checker_finds_a_loop_through_two_modules():
    graph = {"tvlens.injection.p": {"tvlens.probing.f"}, "tvlens.probing.r": {"tvlens.injection.i"},
             "tvlens.injection.i": set(), "tvlens.probing.f": set()}  # fmt: skip
    assert cycles(graph) == []  # no module cycle...
    assert cycles(package_graph(graph)) == [{"injection", "probing"}]  # ...but a package one


def hidden_tvlens_imports(root: Path) -> list[str]:
    """``file:line`` of each import of a tvlens module inside a function, outside the CLI
    (whose commands import their library function when run, so that ``tvlens --help`` does
    not load torch), that does not say why (a comment on its line or the line before)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if "cli" in path.relative_to(root).parts:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("tvlens"):
                    n = sub.lineno
                    if "#" not in lines[n - 1] and not lines[n - 2].strip().startswith("#"):
                        found.append(f"{path.relative_to(root.parent)}:{n}")
    return found


def test_imports_inside_functions_say_why():
    """A tvlens import hidden in a function is a cycle or a start-up cost in disguise: each
    one left says which (an optional dependency or start-up time)."""
    assert hidden_tvlens_imports(ROOT) == []


def test_hidden_import_checker_finds_one(tmp_path):
    pkg = tmp_path / "tvlens"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from tvlens.b import g\n")
    assert hidden_tvlens_imports(pkg) == ["tvlens/a.py:2"]
    (pkg / "a.py").write_text(
        "def f():\n    # imported here: b loads torch\n    from tvlens.b import g\n"
    )
    assert hidden_tvlens_imports(pkg) == []
