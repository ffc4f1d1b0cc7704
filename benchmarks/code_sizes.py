"""Module and function sizes of `generator/` (issue 17 §4, "Functions stay under about 60 lines").

Prints every module's line count, largest first, then every function or method longer than
`--over` lines (decorators not counted, the docstring counted), with where it starts.

    python benchmarks/code_sizes.py [--over 60] [--top 15] [ROOT]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def long_functions(root: Path, over: int) -> list[tuple[int, str]]:
    """(lines, `path:line name`) of every function in `root` longer than `over` lines, longest first."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > over:
                    rows.append((length, f"{path}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent / "generator")
    parser.add_argument("--over", type=int, default=60, help="list functions longer than this many lines (default: 60)")
    parser.add_argument("--top", type=int, default=15, help="list this many of the largest modules (default: 15)")
    args = parser.parse_args()
    sizes = sorted(((len(p.read_text().splitlines()), p) for p in args.root.rglob("*.py")), reverse=True)
    print(f"largest modules of {args.root}:")
    for n, path in sizes[: args.top]:
        print(f"  {n:5d}  {path.relative_to(args.root)}")
    rows = long_functions(args.root, args.over)
    print(f"functions over {args.over} lines: {len(rows)}")
    for n, where in rows:
        print(f"  {n:5d}  {where}")


if __name__ == "__main__":
    main()
