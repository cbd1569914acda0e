"""Command line: ``python -m convbook verify|list|bench``.

    python -m convbook verify                 # every claim, ledger table, exit 1 on a failure
    python -m convbook verify --claim ID      # one claim (repeatable)
    python -m convbook verify --chapter 2     # one chapter
    python -m convbook verify --json          # machine-readable verdicts on stdout
    python -m convbook verify --device cuda   # numerical checks on a GPU
    python -m convbook list                   # ids, chapters and statements
    python -m convbook bench --device cpu --suite depthwise   # time a suite, write notebooks/data/bench/*.json
    python -m convbook review net.py:Net --input 1,3,224,224  # review a model (--format text|md|json)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import sympy
import torch

from .claims import all_claims, format_ledger, get_claim, run_claims


def _environment(device: str) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sympy": sympy.__version__,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def _progress(stream):
    def report(i: int, n: int, claim) -> None:
        width = 24
        done = int(width * i / n) if n else width
        line = f"[{'#' * done}{'.' * (width - done)}] {i + 1}/{n} {claim.id:<40.40}"
        if stream.isatty():
            stream.write("\r" + line)
            if i + 1 == n:
                stream.write("\n")
        else:
            stream.write(line.rstrip() + "\n")
        stream.flush()

    return report


def cmd_verify(args: argparse.Namespace) -> int:
    if args.claim:
        claims = [get_claim(cid) for cid in args.claim]
    else:
        claims = all_claims(chapter=args.chapter)
    if not claims:
        print("no claims matched", file=sys.stderr)
        return 2
    start = time.perf_counter()
    show_progress = not args.quiet
    verdicts = run_claims(claims, device=args.device, progress=_progress(sys.stderr) if show_progress else None)
    elapsed = time.perf_counter() - start
    failed = [v for v in verdicts if not v.passed]
    if args.json:
        json.dump(
            {"environment": _environment(args.device), "seconds": elapsed, "verdicts": [v.as_dict() for v in verdicts]},
            sys.stdout,
            indent=2,
            ensure_ascii=False,
        )
        sys.stdout.write("\n")
    else:
        print(format_ledger(verdicts))
        print()
        for v in failed:
            print(v)
        env = _environment(args.device)
        print(", ".join(f"{k} {v}" for k, v in env.items()))
        print(f"{len(verdicts) - len(failed)} passed, {len(failed)} failed ({elapsed:.1f} s)")
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    for c in all_claims(chapter=args.chapter):
        print(f"{c.chapter:>2}  {c.id:<40} {c.title}")
        if args.statements:
            print(f"    {c.statement}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m convbook", description="Convolutions, Verified — the book's claims and tools")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("verify", help="run the claims' checks and print the ledger")
    p.add_argument("--claim", action="append", metavar="ID", help="run only this claim (repeatable)")
    p.add_argument("--chapter", type=int, help="run only this chapter's claims")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N] for the numerical checks")
    p.add_argument("--json", action="store_true", help="print verdicts as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("list", help="list the claims")
    p.add_argument("--chapter", type=int)
    p.add_argument("--statements", action="store_true", help="also print each statement")
    p.set_defaults(func=cmd_list)

    from .bench import add_cli as _add_bench

    _add_bench(sub)  # python -m convbook bench --device cpu --suite NAME [--out DIR] [--force]

    from .review import add_cli as _add_review

    _add_review(sub)  # python -m convbook review FILE.py:NAME --input 1,3,224,224 [--format text|md|json]

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


#: Other modules add subcommands here (``register(subparsers)``), e.g. the benchmark harness.
_EXTRA_COMMANDS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
