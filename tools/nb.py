"""Author, execute and check the book's notebooks.

Each notebook is written as a MyST Markdown text file (readable diffs) and committed twice:
the text source ``X/src/NAME.md`` and the executed notebook ``X/NAME.ipynb`` that readers
see, the book renders and nbval re-runs.

    python tools/nb.py build [SRC.md ...]   # text -> notebook, executed top to bottom in a fresh kernel
    python tools/nb.py check               # every notebook matches its source, ran in order, no errors

Sources are found under ``notebooks/src/`` and ``book/src/``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE_DIRS = [ROOT / "notebooks" / "src", ROOT / "book" / "src"]
TIMEOUT_S = 300
KEPT_METADATA = ("tags",)
INSTALL_TAG = "install-convbook"


def repository() -> tuple[str, str]:
    """``(url, branch)`` of the book's repository, read from ``_config.yml`` (the one place it is set)."""
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo = config.get("repository") or {}
    url, branch = repo.get("url"), repo.get("branch", "main")
    if not url:
        raise ValueError("_config.yml: repository.url is not set; the chapters' install cell needs it")
    return str(url), str(branch)


def install_cell_source() -> str:
    """The first code cell of every chapter: on Colab or a bare Jupyter, install the book's library
    from the repository when ``convbook`` is not importable; a no-op where it is (``make lab``, nbval, Binder).

    ``--no-deps``: the library needs torch, numpy, sympy and matplotlib, which Colab already has;
    installing its pinned CPU torch there would replace Colab's own build.
    """
    url, branch = repository()
    return (
        "# Colab or a bare Jupyter: install the book's library when it is missing (a no-op where it imports).\n"
        "import importlib.util, subprocess, sys\n"
        "if importlib.util.find_spec(\"convbook\") is None:\n"
        f"    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"--quiet\", \"--no-deps\",\n"
        f"                    \"git+{url}@{branch}\"], check=True)"
    )


def sources() -> list[pathlib.Path]:
    return sorted(p for d in SOURCE_DIRS if d.is_dir() for p in d.glob("*.md"))


def target_of(src: pathlib.Path) -> pathlib.Path:
    """``X/src/NAME.md`` -> ``X/NAME.ipynb``."""
    return src.parent.parent / (src.stem + ".ipynb")


def _from_source(src: pathlib.Path) -> nbformat.NotebookNode:
    nb = jupytext.read(src, fmt="md:myst")
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in KEPT_METADATA}
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), None)
    if first_code is not None and src.parent.parent.name == "notebooks":
        install = nbformat.v4.new_code_cell(install_cell_source(), metadata={"tags": ["remove-cell", INSTALL_TAG]})
        nb.cells.insert(first_code, install)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:03d}"
    return nb


def build(paths: list[pathlib.Path]) -> int:
    for src in paths:
        nb = _from_source(src)
        target = target_of(src)
        start = time.perf_counter()
        client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(target.parent)}})
        client.execute()
        elapsed = time.perf_counter() - start
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"cell-{i:03d}"
        nbformat.validate(nb)
        nbformat.write(nb, target)
        print(f"executed {src.relative_to(ROOT)} -> {target.relative_to(ROOT)} in {elapsed:.1f} s")
        if elapsed > 60:
            print(f"  WARNING: {target.name} took {elapsed:.0f} s; the budget is 60 s on a 2-core CPU", file=sys.stderr)
    return 0


def _code_like(cell) -> tuple:
    return (cell.cell_type, cell.source.strip(), tuple(cell.metadata.get("tags", ())))


def check() -> int:
    problems = []
    srcs = sources()
    targets = {target_of(s) for s in srcs}
    for d in (ROOT / "notebooks", ROOT / "book"):
        for nb_path in sorted(d.glob("*.ipynb")):
            if nb_path not in targets:
                problems.append(f"{nb_path.relative_to(ROOT)}: no text source under {d.relative_to(ROOT)}/src/")
    for src in srcs:
        target = target_of(src)
        rel = target.relative_to(ROOT)
        if not target.exists():
            problems.append(f"{rel}: missing; run `python tools/nb.py build {src.relative_to(ROOT)}`")
            continue
        want = [_code_like(c) for c in _from_source(src).cells]
        nb = nbformat.read(target, as_version=4)
        have = [_code_like(c) for c in nb.cells]
        if want != have:
            first = next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
            problems.append(f"{rel}: out of sync with {src.relative_to(ROOT)} (first differing cell: {first}); rebuild it")
        code = [c for c in nb.cells if c.cell_type == "code"]
        counts = [c.execution_count for c in code]
        if any(n is None for n in counts) or counts != list(range(1, len(code) + 1)):
            problems.append(f"{rel}: code cells not executed once, top to bottom, in a fresh kernel (counts {counts})")
        for i, c in enumerate(code):
            for out in c.get("outputs", []):
                if out.get("output_type") == "error":
                    problems.append(f"{rel}: code cell {i} stored an error ({out.get('ename')})")
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    problems.append(f"{rel}: code cell {i} wrote to stderr; fix the warning's cause")
    for p in problems:
        print("  -", p)
    print(f"checked {len(srcs)} notebook sources: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("paths", nargs="*", type=pathlib.Path)
    sub.add_parser("check")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        paths = [p.resolve() for p in args.paths] or sources()
        return build(paths)
    return check()


if __name__ == "__main__":
    sys.exit(main())
