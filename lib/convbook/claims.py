"""The claim registry: every result the book states, with the code that checks it.

A *claim* is a stable id (``shape.conv-output``), a title, the chapter it belongs to,
a one-sentence statement, and a *check*: a function ``check(device="cpu") -> Verdict``
that re-derives or re-measures the result and reports how it went.

Checks live next to the code they check (``convbook.conv`` holds chapter 1's) and are
registered with the :func:`claim` decorator.  :func:`all_claims` imports every module of
the package once, so a new module's claims appear without editing a central list.

A :class:`Verdict` records the method, the number of cases tried, the largest error seen
and the tolerance it is held to, or the number of mismatches for exact comparisons.
:class:`Tally` accumulates those numbers inside a check and refuses to pass a check that
tried no case, so an empty loop can never print a green tick.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "Claim",
    "Verdict",
    "Tally",
    "claim",
    "all_claims",
    "get_claim",
    "verify",
    "run_claims",
    "ledger_rows",
    "format_ledger",
    "ID_PATTERN",
    "SYMPY_ROLES",
    "alias",
    "aliases",
]

#: Claim ids are lower-case words joined by '-', grouped by '.': ``subject.result-name``.
ID_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)+$"

SYMPY_ROLES = ("derived", "proven for symbolic sizes", "verified for finitely many sizes")

PASS_MARK = "✓"
FAIL_MARK = "✗"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one claim's check.

    ``passed`` is computed by :class:`Tally` from the numbers, never set by hand in a check:
    it is true when at least one case was tried, no exact comparison mismatched, and the
    largest error seen is within the tolerance.
    """

    claim_id: str
    passed: bool
    method: str
    cases: int
    case_unit: str = "cases"
    max_error: float | None = None
    tolerance: float | None = None
    error_kind: str = "rel."
    mismatches: int | None = None
    dtype: str | None = None
    notes: tuple[str, ...] = ()
    seconds: float | None = None

    def line(self) -> str:
        """One deterministic line: mark, id, method, cases, error vs tolerance.

        The measured error is printed as ``error 1.2e-16 (tol 1e-12)``; the notebooks'
        nbval sanitizer masks the measured figure (it may differ in the last bits between
        machines) and keeps the verdict, the case count and the tolerance.
        """
        mark = PASS_MARK if self.passed else FAIL_MARK
        parts = [self.method]
        if self.dtype:
            parts.append(self.dtype)
        parts.append(f"{self.cases:,} {self.case_unit}")
        if self.mismatches is not None:
            parts.append(f"{self.mismatches:,} mismatches")
        if self.tolerance is not None:
            err = "n/a" if self.max_error is None else f"{self.max_error:.1e}"
            parts.append(f"max {self.error_kind} error {err} (tol {self.tolerance:.0e})")
        return f"{mark} {self.claim_id} — " + ", ".join(parts)

    def __str__(self) -> str:
        text = self.line()
        for note in self.notes:
            text += f"\n    {note}"
        return text

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Tally:
    """Accumulates the evidence of one check.

    Use :meth:`close` to compare arrays (tracks the largest error), :meth:`exact` to count
    exact agreements (tracks mismatches), then :meth:`verdict`.

    Parameters
    ----------
    tol:
        Largest acceptable error for :meth:`close`; ``None`` for checks that only compare
        exactly.
    kind:
        ``"rel."`` — error is ``max|a - b| / max|b|`` per case, and ``max|a - b|`` (the absolute
        error) when the reference ``b`` is all zero — dividing by a tiny floor instead would turn
        a 1e-16 rounding error into 1e284; when such a case has a non-zero error the verdict
        says so in a note;
        ``"abs."`` — error is ``max|a - b|``.
    """

    tol: float | None = None
    kind: str = "rel."
    cases: int = 0
    max_error: float = 0.0
    mismatches: int = 0
    compared_close: bool = False
    compared_exact: bool = False
    notes: list[str] = field(default_factory=list)
    first_failure: str | None = None
    zero_references: int = 0
    """Cases of :meth:`close` (kind ``"rel."``) whose reference was all zero and whose result was not:
    their error is the absolute one, and the verdict says so."""

    def close(self, actual, expected, what: str = "") -> float:
        """Compare two arrays (torch or numpy) of the same shape; returns the case's error."""
        if self.tol is None:
            raise ValueError("Tally.close needs a tolerance: construct Tally(tol=...)")
        a = _as_numpy(actual)
        b = _as_numpy(expected)
        self.cases += 1
        self.compared_close = True
        if a.shape != b.shape:
            err = float("inf")
        else:
            diff = float(np.max(np.abs(a - b))) if a.size else 0.0
            if self.kind == "abs.":
                err = diff
            else:
                scale = float(np.max(np.abs(b))) if b.size else 0.0
                if scale == 0.0:  # all-zero reference: no scale to be relative to, so the absolute error
                    err = diff
                    if diff > 0.0:  # (an exact zero is zero either way: nothing to report)
                        self.zero_references += 1
                else:
                    err = diff / scale
            if not np.isfinite(err):
                err = float("inf")
        if err > self.max_error:
            self.max_error = err
        if err > self.tol and self.first_failure is None:
            shape_note = "" if a.shape == b.shape else f" (shape {a.shape} vs {b.shape})"
            self.first_failure = f"{what}{shape_note}: error {err:.3g} > tol {self.tol:.0e}"
        return err

    def exact(self, ok: bool, what: str = "") -> bool:
        """Record one exact comparison (an integer, a shape, a symbolic identity, a raise)."""
        self.cases += 1
        self.compared_exact = True
        if not ok:
            self.mismatches += 1
            if self.first_failure is None:
                self.first_failure = f"mismatch: {what}" if what else "mismatch"
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def passed(self) -> bool:
        if self.cases == 0:
            return False
        if self.mismatches:
            return False
        if self.compared_close and not (self.max_error <= self.tol):  # type: ignore[operator]
            return False
        return True

    def verdict(self, method: str, *, case_unit: str = "cases", dtype: str | None = None) -> Verdict:
        notes = list(self.notes)
        if self.zero_references:
            notes.append(f"absolute error where the reference is zero ({self.zero_references:,} "
                         f"{'case' if self.zero_references == 1 else 'cases'})")
        if self.cases == 0:
            notes.append("no case was tried: a check that tries nothing fails")
        if self.first_failure and not self.passed:
            notes.append("first failure: " + self.first_failure)
        return Verdict(
            claim_id="",
            passed=self.passed,
            method=method,
            cases=self.cases,
            case_unit=case_unit,
            max_error=self.max_error if self.compared_close else None,
            tolerance=self.tol if self.compared_close else None,
            error_kind=self.kind,
            mismatches=self.mismatches if self.compared_exact else None,
            dtype=dtype,
            notes=tuple(notes),
        )


@dataclass(frozen=True)
class Claim:
    """A registered claim: id, title, chapter, statement and its check."""

    id: str
    title: str
    chapter: int
    statement: str
    check: Callable[..., Verdict]
    module: str
    order: int
    parameters: tuple[str, ...] = ()
    """Every parameter the statement quantifies over (``"eps"``, ``"per-axis kernel"``, ...).
    ``tests/test_claims.py`` requires one planted failure for each of them."""
    reference: str = ""
    """The independent reference the check compares against (PyTorch, autograd, brute force,
    exact arithmetic, ...), shown in the ledger."""
    sympy_role: str = ""
    """What sympy does in the check, where it takes part: ``"derived"``, ``"proven for symbolic
    sizes"`` or ``"verified for finitely many sizes"``."""

    def run(self, device: str = "cpu") -> Verdict:
        start = time.perf_counter()
        result = self.check(device=device)
        if not isinstance(result, Verdict):
            raise TypeError(f"check of claim {self.id!r} returned {type(result).__name__}, not a Verdict")
        return dataclasses.replace(result, claim_id=self.id, seconds=time.perf_counter() - start)


_REGISTRY: dict[str, Claim] = {}
_ALIASES: dict[str, tuple[str, str]] = {}
_DISCOVERED = False


def alias(old_id: str, new_id: str, why: str) -> None:
    """Keep a published id resolvable after its content moved or merged into ``new_id``.

    ``get_claim(old_id)`` returns the claim ``new_id``; :func:`aliases` lists the pointers so
    the ledger can print them.  Published ids are never deleted.
    """
    import re

    if not re.match(ID_PATTERN, old_id):
        raise ValueError(f"alias {old_id!r} does not follow the id pattern {ID_PATTERN}")
    if old_id in _REGISTRY:
        raise ValueError(f"alias {old_id!r} is still a registered claim; remove the claim first")
    _ALIASES[old_id] = (new_id, why)


def aliases() -> dict[str, tuple[str, str]]:
    """``{old_id: (new_id, why)}`` for every published id that now points to another claim."""
    _discover()
    return dict(_ALIASES)


def claim(
    id: str,
    *,
    title: str,
    chapter: int,
    statement: str,
    parameters: Sequence[str] = (),
    reference: str = "",
    sympy_role: str = "",
) -> Callable:
    """Register the decorated function as the check of claim ``id``.

    The function must accept ``device: str = "cpu"`` and return a :class:`Verdict`
    (normally ``tally.verdict(...)``).  Ids are unique and follow :data:`ID_PATTERN`.

    ``parameters`` names every parameter the statement quantifies over; each needs a planted
    failure that ignores it (``Plant(..., parameter=NAME)``).  ``reference`` names the
    independent reference the check compares against; ``sympy_role`` says what sympy does
    (``"derived"``, ``"proven for symbolic sizes"``, ``"verified for finitely many sizes"``).
    """
    import re

    if sympy_role and sympy_role not in SYMPY_ROLES:
        raise ValueError(f"claim {id!r}: sympy_role must be one of {SYMPY_ROLES}, got {sympy_role!r}")

    if not re.match(ID_PATTERN, id):
        raise ValueError(f"claim id {id!r} does not follow the pattern subject.result-name ({ID_PATTERN})")
    if not isinstance(chapter, int) or chapter < 0:
        raise ValueError(f"claim {id!r}: chapter must be a non-negative int, got {chapter!r}")

    def register(fn: Callable[..., Verdict]) -> Callable[..., Verdict]:
        existing = _REGISTRY.get(id)
        if existing is not None and (existing.module, existing.check.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"claim id {id!r} registered twice: {existing.module} and {fn.__module__}")
        _REGISTRY[id] = Claim(
            id=id,
            title=title,
            chapter=chapter,
            statement=statement,
            check=fn,
            module=fn.__module__,
            order=existing.order if existing else len(_REGISTRY),
            parameters=tuple(parameters),
            reference=reference,
            sympy_role=sympy_role,
        )
        fn.claim_id = id  # type: ignore[attr-defined]
        return fn

    return register


def _discover() -> None:
    """Import every module of the package so that all claims register themselves."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    import convbook

    for info in pkgutil.walk_packages(convbook.__path__, prefix="convbook."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
    _DISCOVERED = True


def all_claims(chapter: int | None = None) -> list[Claim]:
    """All registered claims, by chapter then registration order."""
    _discover()
    claims = sorted(_REGISTRY.values(), key=lambda c: (c.chapter, c.order))
    if chapter is not None:
        claims = [c for c in claims if c.chapter == chapter]
    return claims


def get_claim(claim_id: str) -> Claim:
    """The claim with this id; an alias (a published id that moved) resolves to its target."""
    _discover()
    if claim_id in _ALIASES and claim_id not in _REGISTRY:
        claim_id = _ALIASES[claim_id][0]
    try:
        return _REGISTRY[claim_id]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ValueError(f"unknown claim id {claim_id!r}; known ids: {known}") from None


def verify(claim_id: str, device: str = "cpu") -> Verdict:
    """Run one claim's check and return its verdict (print it for the one-line report)."""
    return get_claim(claim_id).run(device=device)


def run_claims(
    claims: Sequence[Claim] | None = None,
    *,
    device: str = "cpu",
    progress: Callable[[int, int, Claim], None] | None = None,
) -> list[Verdict]:
    """Run several claims (all by default), calling ``progress(i, n, claim)`` before each."""
    claims = list(all_claims() if claims is None else claims)
    verdicts = []
    for i, c in enumerate(claims):
        if progress is not None:
            progress(i, len(claims), c)
        verdicts.append(c.run(device=device))
    return verdicts


def ledger_rows(verdicts: Iterable[Verdict], *, with_errors: bool = True) -> list[dict]:
    """Rows of the verification ledger, one per verdict, in a fixed column order."""
    rows = []
    for v in verdicts:
        c = get_claim(v.claim_id)
        if v.mismatches is not None and v.tolerance is None:
            evidence = f"{v.mismatches} mismatches"
        elif v.tolerance is not None:
            evidence = (f"{v.max_error:.1e} ≤ {v.tolerance:.0e}" if with_errors else f"≤ {v.tolerance:.0e}")
            if v.mismatches is not None:
                evidence += f"; {v.mismatches} mismatches"
        else:
            evidence = ""
        rows.append(
            {
                "ch": c.chapter,
                "claim": c.id,
                "title": c.title,
                "method": v.method + (f" ({v.dtype})" if v.dtype else ""),
                "cases": f"{v.cases:,}",
                "evidence": evidence,
                "ok": PASS_MARK if v.passed else FAIL_MARK,
            }
        )
    return rows


def format_ledger(verdicts: Iterable[Verdict], *, with_errors: bool = True) -> str:
    """A plain-text table of the ledger (fixed-width columns)."""
    rows = ledger_rows(verdicts, with_errors=with_errors)
    if not rows:
        return "(no claims)"
    cols = ["ch", "claim", "cases", "evidence", "ok", "method"]
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in cols}
    head = "  ".join(k.ljust(widths[k]) for k in cols).rstrip()
    rule = "  ".join("-" * widths[k] for k in cols)
    body = ["  ".join(str(r[k]).ljust(widths[k]) for k in cols).rstrip() for r in rows]
    return "\n".join([head, rule, *body])


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").numpy()
    return np.asarray(x)
