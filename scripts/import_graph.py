"""The project's import graph (module-level imports between its own modules): prints every
edge, then any cycle, and exits 1 if there is one. `python scripts/import_graph.py`."""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("orchestrator", "trainers", "analysis")


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    mods = {module_of(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.parse(p.read_text()).body:  # module level only: no lazy imports
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            edges[m] |= {n for n in names if n in mods and n != m}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(m, stack):
        state[m] = 1
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                found.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    return found


if __name__ == "__main__":
    g = graph()
    for m in sorted(g):
        if g[m]:
            print(f"{m} -> {', '.join(sorted(g[m]))}")
    loops = cycles(g)
    for c in loops:
        print("CYCLE: " + " -> ".join(c))
    print(f"{len(g)} modules, {sum(map(len, g.values()))} edges, {len(loops)} cycle(s)")
    sys.exit(1 if loops else 0)
