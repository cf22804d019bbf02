#!/usr/bin/env python3
"""The package's map of imports: each module's lines, the modules of the package it imports (at the top or inside
a function), its floor (1 + the highest floor it imports; a module importing nothing of the package is on floor
0), and the longest chain of imports. Any cycle is named.

    python bench/import_map.py [PACKAGE_DIR]      # default: digitgan/ beside this folder
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path) -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                base = base[:len(base) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [f"{target}.{a.name}" for a in node.names] + [target]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            for c in candidates:
                if c in files and c != name:
                    found.add(c)
                    break
        graph[name] = {m for m in found if not (files[m].name == "__init__.py" and m != root.name)}
    return graph


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    @cache
    def floor(m: str, stack: tuple[str, ...] = ()) -> int:
        if m in stack:
            raise RecursionError(" -> ".join(stack[stack.index(m):] + (m,)))
        return 1 + max((floor(d, stack + (m,)) for d in graph[m]), default=-1)
    return {m: floor(m) for m in graph}


def chain(graph: dict[str, set[str]], floor: dict[str, int], top: str) -> list[str]:
    out = [top]
    while graph[out[-1]]:
        out.append(max(graph[out[-1]], key=lambda d: floor[d]))
    return out


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "digitgan"
    graph = imports(root)
    try:
        floor = floors(graph)
    except RecursionError as e:
        sys.exit(f"import cycle: {e}")
    total = 0
    for m in sorted(graph, key=lambda m: (floor[m], m)):
        path = root.parent.joinpath(*m.split(".")).with_suffix(".py")
        path = path if path.exists() else root.parent.joinpath(*m.split("."), "__init__.py")
        lines = len(path.read_text().splitlines())
        total += lines
        print(f"floor {floor[m]:2d}  {lines:5d}  {m}")
    top = max(floor, key=lambda m: floor[m])
    print(f"{len(graph)} modules, {total} lines; {max(floor.values()) + 1} floors; the longest chain: "
          f"{' -> '.join(chain(graph, floor, top))}")


if __name__ == "__main__":
    main()
