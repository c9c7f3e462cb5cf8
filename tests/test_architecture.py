"""The house rules of docs/ARCHITECTURE.md, checked on the source: imports between rooms go
one way only and modules import each other without a cycle (lazy imports inside functions
included), no module grows past 450 lines, and
nothing in the code or the docs points outside the repository."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450
HARD_LIMIT = 700

# room -> the rooms it may import. Everything may import the base (errors, spans).
ALLOWED = {
    "base": set(),
    "kernels": {"base"},
    "selector": {"kernels", "base"},
    "store": {"base"},
    "models": {"selector", "base"},
    "app": {"models", "selector", "store", "base"},
    "tui": {"app", "models", "selector", "store", "base"},
    "train": {"models", "selector", "base"},
    "learn": {"train", "models", "selector", "store", "base"},
    "serve": {"app", "models", "selector", "store", "base"},
    "bench": {"serve", "learn", "train", "tui", "app", "models", "selector", "store", "kernels", "base"},
    "cli": {"serve", "bench", "learn", "train", "tui", "app", "models", "selector", "store", "kernels", "base"},
}


def package_dirs() -> dict[str, Path]:
    """heedful.* package -> source folder, from pyproject's package-dir mapping."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {pkg: ROOT / folder for pkg, folder in cfg["package-dir"].items()}


def modules() -> dict[str, Path]:
    """Every module of the distribution: dotted name -> file."""
    out = {}
    dirs = package_dirs()
    for pkg, folder in dirs.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            # a subfolder that is itself mapped (heedful.selector under heedful/) is skipped here
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            owner = max((p for p in dirs if name == p or name.startswith(p + ".")), key=len)
            if owner == pkg:
                out[name] = path
    return out


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ALLOWED and parts[1] != "base":
        return parts[1]
    return "cli" if module == "heedful.__main__" else "base"


def imports(name: str, path: Path):
    """(line, imported module) for every import of the project, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                targets = [".".join(base + ([node.module] if node.module else []))]
            else:
                targets = [node.module or ""]
        else:
            continue
        for t in targets:
            if t == "heedful" or t.startswith("heedful."):
                yield node.lineno, t


def test_the_scan_sees_every_room():
    seen = {room(m) for m in modules()}
    assert seen == set(ALLOWED), seen


def test_imports_go_one_way_only():
    bad, edges = [], defaultdict(set)
    for name, path in modules().items():
        src = room(name)
        for line, target in imports(name, path):
            dst = room(target)
            if dst == src:
                continue
            edges[src].add(dst)
            if dst not in ALLOWED[src]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {src} imports {dst} ({target})")
    assert not bad, "imports against the arrows of docs/ARCHITECTURE.md:\n" + "\n".join(bad)
    # and the rooms' graph as imported has no cycle (ALLOWED itself could be wrong)
    state: dict[str, int] = {}

    def visit(r, trail):
        if state.get(r) == 1:
            raise AssertionError("cycle between rooms: " + " -> ".join(trail + [r]))
        if state.get(r) == 2:
            return
        state[r] = 1
        for d in edges[r]:
            visit(d, trail + [r])
        state[r] = 2

    for r in list(edges):
        visit(r, [])


def module_imports(name: str, path: Path, mods: dict[str, Path]):
    """(line, module) for every import of a module of the project, lazy ones included; `from
    package import name` counts as an import of package.name when that is a module."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t in mods and t != name:
                yield node.lineno, t


def module_cycles() -> list[set[str]]:
    """The strongly connected groups of two or more modules in the import graph (Tarjan)."""
    mods = modules()
    graph = {m: {t for _, t in module_imports(m, p, mods)} for m, p in mods.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(group)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_import_cycle():
    """Within a room too: modules import each other one way (lazy imports included), so a
    reader meets no forward reference and nothing hides a cycle inside a function."""
    found = [sorted(c) for c in module_cycles()]
    assert not found, f"module import cycles: {found}"


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "heedful" / "train"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("def f():\n    from heedful.train.b import g\n")
    (pkg / "b.py").write_text("from heedful.train import a\n")
    monkeypatch.setattr(sys.modules[__name__], "modules", lambda: {"heedful.train.a": pkg / "a.py",
                                                                  "heedful.train.b": pkg / "b.py"})
    assert module_cycles() == [{"heedful.train.a", "heedful.train.b"}]


# Rooms whose functions import only optional or heavy packages and other rooms' modules kept
# off the start-up path: no standard-library module (nothing to delay) and nothing of their own
# room (a lazy import inside a room hides a cycle). The other rooms join as they are cleaned.
LAZY_CLEAN = {"base", "kernels", "learn", "train", "tui"}


def lazy_imports(path: Path):
    """(line, module) of each import inside a function."""
    tree = ast.parse(path.read_text(), str(path))
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    yield from ((node.lineno, a.name) for a in node.names)
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    yield node.lineno, node.module or ""


def test_imports_inside_functions_are_for_optional_or_heavy_packages():
    bad = []
    for name, path in modules().items():
        if room(name) not in LAZY_CLEAN:
            continue
        for line, target in lazy_imports(path):
            same_room = (target == "heedful" or target.startswith("heedful.")) and room(target) == room(name)
            if target.split(".")[0] in sys.stdlib_module_names or same_room:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {target}")
    assert not bad, "imports inside functions (put them at the top):\n" + "\n".join(bad)


def test_the_allowed_arrows_have_no_cycle():
    order, done = [], set()

    def visit(r, trail):
        assert r not in trail, "cycle in ALLOWED: " + " -> ".join(trail + [r])
        if r in done:
            return
        for d in ALLOWED[r]:
            visit(d, trail + [r])
        done.add(r)
        order.append(r)

    for r in ALLOWED:
        visit(r, [])
    assert order[0] == "base"


def documented_owners() -> set[str]:
    """Modules that docs/ARCHITECTURE.md names as owners allowed past the line guide."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    part = text.split("## Owners past the line guide", 1)
    if len(part) < 2:
        return set()
    section = part[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `([^`]+\.py)`", section, re.M))


def test_no_module_over_the_limit():
    """450 lines is a guide: a module past it is an owner that docs/ARCHITECTURE.md names and
    says why it stays whole; none passes HARD_LIMIT."""
    files = list(modules().values()) + list((ROOT / "tests").rglob("*.py"))
    owners = documented_owners()
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in files}
    long = [f"{p}: {n} lines" for p, n in sizes.items() if n > MAX_LINES and p not in owners]
    assert not long, f"past {MAX_LINES} lines and not a documented owner: {long}"
    huge = [f"{p}: {n} lines" for p, n in sizes.items() if n > HARD_LIMIT]
    assert not huge, huge
    stale = sorted(p for p in owners if sizes.get(p, 0) <= MAX_LINES)
    assert not stale, f"named as owners past the guide but within it (or gone): {stale}"


OUTSIDE = re.compile(r"\.\./shared|/work/|shared/DESIGN")


def test_code_and_docs_point_nowhere_outside_the_repository():
    paths = [*modules().values(), *(ROOT / "docs").rglob("*.md"), ROOT / "README.md", ROOT / "pyproject.toml",
             *(ROOT / "scripts").iterdir()]
    hits = [f"{p.relative_to(ROOT)}:{k}: {line.strip()}" for p in paths
            for k, line in enumerate(p.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, hits


def test_docs_links_resolve():
    """Relative links in README and docs name files that exist in the repository."""
    missing = []
    for md in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)", md.read_text()):
            if "://" in target:
                continue
            if not (md.parent / target).exists():
                missing.append(f"{md.relative_to(ROOT)}: {target}")
    assert not missing, missing
