"""The verification ledger as a table: one row per claim, linked to the claim's anchor in its chapter.

Read-only: it runs nothing and registers nothing; it formats verdicts that :func:`convbook.claims.run_claims`
returned. The book's ledger page (``book/src/ledger.md``) shows :func:`ledger_table`; ``python -m convbook
verify`` prints the plain-text form of the same rows.

Every cell is deterministic except the measured float64 error, which is printed as ``4.1e-16 ≤ 1e-12`` so
that the notebooks' nbval sanitizer (``tools/nbval-sanitize.cfg``) masks the measured figure and keeps the
tolerance and the verdict compared.
"""

from __future__ import annotations

import html
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

from .claims import FAIL_MARK, PASS_MARK, Verdict, get_claim

__all__ = ["LedgerRow", "claim_pages", "evidence", "ledger_rows", "ledger_table", "provenance"]

_LABEL = re.compile(r"^[ \t]*:label:[ \t]*(\S+)[ \t]*$", re.M)


def claim_pages(sources: Path | str, html_prefix: str = "../notebooks/") -> dict[str, str]:
    """``{claim id: "../notebooks/NN-name.html"}`` for every ``:label:`` in the chapter sources ``NN-name.md``.

    A claim's label is its anchor, so the link to a claim is ``page + "#" + id``.
    """
    pages: dict[str, str] = {}
    for src in sorted(Path(sources).glob("*.md")):
        for label in _LABEL.findall(src.read_text(encoding="utf-8")):
            pages.setdefault(label, f"{html_prefix}{src.stem}.html")
    return pages


def evidence(v: Verdict) -> str:
    """The largest error against the tolerance (``4.1e-16 ≤ 1e-12``), or the number of mismatches."""
    parts = []
    if v.tolerance is not None:
        if v.max_error is None:
            parts.append(f"n/a (tol {v.tolerance:.0e})")
        else:
            sign = "≤" if v.max_error <= v.tolerance else ">"
            parts.append(f"{v.error_kind} error {v.max_error:.1e} {sign} {v.tolerance:.0e}")
    if v.mismatches is not None:
        parts.append(f"{v.mismatches:,} mismatches")
    return "; ".join(parts)


@dataclass(frozen=True)
class LedgerRow:
    claim_id: str
    title: str
    chapter: int
    statement: str
    passed: bool
    method: str
    cases: str
    evidence: str
    href: str | None
    reference: str = ""
    sympy_role: str = ""


def ledger_rows(verdicts: Iterable[Verdict], pages: Mapping[str, str] | None = None) -> list[LedgerRow]:
    """One row per verdict, with the claim's title, chapter and full statement from the registry."""
    rows = []
    for v in verdicts:
        c = get_claim(v.claim_id)
        page = (pages or {}).get(c.id)
        rows.append(
            LedgerRow(
                claim_id=c.id,
                title=c.title,
                chapter=c.chapter,
                statement=c.statement,
                passed=v.passed,
                method=v.method + (f", {v.dtype}" if v.dtype else ""),
                cases=f"{v.cases:,} {v.case_unit}",
                evidence=evidence(v),
                href=f"{page}#{c.id}" if page else None,
                reference=c.reference,
                sympy_role=c.sympy_role,
            )
        )
    return rows


def ledger_table(verdicts: Iterable[Verdict], pages: Mapping[str, str] | None = None) -> str:
    """The ledger as an HTML table: claim (linked id and title), chapter, statement, verdict, cases, evidence."""
    esc = html.escape
    cols = "".join(f'<col class="ledger-{c}">' for c in ("claim", "chapter", "statement", "verdict", "cases", "evidence"))
    head = (f"<colgroup>{cols}</colgroup><thead><tr><th>claim</th><th>ch.</th><th>statement</th><th>✓</th>"
            "<th>cases, method, reference</th><th>error vs tol.</th></tr></thead>")
    body = []
    for r in ledger_rows(verdicts, pages):
        ident = f'<code class="claim-id">{esc(r.claim_id)}</code>'
        link = f'<a class="claim-ref reference internal" href="{esc(r.href)}">{ident}</a>' if r.href else ident
        mark = PASS_MARK if r.passed else FAIL_MARK
        body.append(
            "<tr>"
            f'<td class="ledger-claim">{link}<br><span class="ledger-title">{esc(r.title)}</span></td>'
            f'<td class="ledger-chapter">{r.chapter}</td>'
            f'<td class="ledger-statement">{esc(r.statement)}</td>'
            f'<td class="ledger-verdict" title="{"passed" if r.passed else "failed"}">{mark}</td>'
            f'<td class="ledger-cases">{esc(r.cases)}<br><span class="ledger-method">{esc(r.method)}</span>'
            f'<br><span class="ledger-reference">checked against: {esc(r.reference)}</span>'
            + (f'<br><span class="ledger-sympy">sympy: {esc(r.sympy_role)}</span>' if r.sympy_role else "")
            + "</td>"
            f'<td class="ledger-evidence">{esc(r.evidence)}</td>'
            "</tr>"
        )
    return (f'<div class="table-wrapper ledger-wrapper"><table class="table ledger">{head}<tbody>'
            + "".join(body) + "</tbody></table></div>")


def provenance(repo: Path | str = ".", now: datetime | None = None) -> str:
    """When and from which commit the ledger was run: ``2026-12-01 21:40 UTC, commit 3c3e0f4``.

    Adds "with uncommitted changes to lib/" when the library differs from that commit, and says so
    when the folder is not a git checkout (a copy of the book without its history).
    """
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)

    try:
        head = git("rev-parse", "--short=12", "HEAD")
    except OSError:  # no git on this machine
        return f"{when}, outside a git checkout"
    if head.returncode != 0:
        return f"{when}, outside a git checkout"
    text = f"{when}, commit {head.stdout.strip()}"
    if git("diff", "--quiet", "HEAD", "--", "lib").returncode != 0:
        text += " with uncommitted changes to lib/"
    return text
