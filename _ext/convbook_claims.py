"""Sphinx extension: a claim is cited by its id, so every link to a claim shows the id.

A claim is a ``{prf:...}`` block whose ``:label:`` is a claim id (``subject.result-name``, the pattern of
``convbook.claims.ID_PATTERN``); the label is also the block's HTML anchor. sphinx-proof renders
``{prf:ref}`label``` as "Proposition 8.1", which hides the id a reader is told to cite. This extension:

* rewrites, after references are resolved, the text of every internal link to a claim anchor to
  ``shortcut.bottleneck-shapes (Prop. 8.1)`` — the id first, the number after (a link whose text
  already contains the id is left alone), and gives the link the class ``claim-ref``;
* replaces sphinx-proof's Proof Index (``prf-prf.html``, a list of bare ids) by a claims index grouped by
  chapter: id, title and number of every claim, each linked to its anchor.

No chapter source changes: the rewriting happens at build time. ``tools/browser_check.py`` fails
when a link to a claim does not show the claim's id.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform

__all__ = ["CLAIM_ID", "is_claim_id", "link_text", "plain_title", "short_number", "setup"]

# The claim id pattern of convbook.claims.ID_PATTERN (kept here so the build does not import the library).
CLAIM_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)+$")

_ABBREVIATIONS = {
    "Proposition": "Prop.",
    "Theorem": "Thm.",
    "Lemma": "Lemma",
    "Corollary": "Cor.",
    "Conjecture": "Conj.",
    "Definition": "Def.",
    "Example": "Ex.",
    "Remark": "Rem.",
    "Observation": "Obs.",
    "Property": "Prop.",
    "Criterion": "Crit.",
    "Algorithm": "Alg.",
    "Axiom": "Axiom",
    "Assumption": "Assum.",
    "Exercise": "Ex.",
}
_NUMBERED = re.compile(r"^\s*([A-Z][a-z]+)\s+(\d+(?:\.\d+)*)\s*$")


def is_claim_id(label: str) -> bool:
    """True for a label of the claim-id form ``subject.result-name``."""
    return bool(CLAIM_ID.match(label))


def short_number(text: str) -> str:
    """``"Proposition 8.1"`` -> ``"Prop. 8.1"``; any other text is returned stripped."""
    m = _NUMBERED.match(text)
    if not m:
        return text.strip()
    return f"{_ABBREVIATIONS.get(m.group(1), m.group(1))} {m.group(2)}"


def link_text(claim_id: str, text: str) -> tuple[str, str] | None:
    """The (id, note) a link to ``claim_id`` should show instead of ``text``; None to leave it.

    A link that already shows the id keeps its text; otherwise the id comes first and the old
    text, shortened, follows in parentheses: ``("shortcut.rank", "Prop. 8.3")``.
    """
    if claim_id in text:
        return None
    note = short_number(text)
    return claim_id, ("" if note in ("", claim_id) else note)


def _fragment(ref: nodes.reference) -> str:
    if ref.get("refid"):
        return ref["refid"]
    uri = ref.get("refuri", "")
    return uri.split("#", 1)[1] if "#" in uri else ""


class ClaimLinkText(SphinxPostTransform):
    """Show the claim id in every link to a claim (runs after the references are resolved)."""

    default_priority = 50  # the ReferencesResolver runs at 10
    formats = ("html",)

    def run(self, **kwargs: Any) -> None:
        claims = getattr(self.env, "convbook_claims", {})
        for ref in list(self.document.findall(nodes.reference)):
            if not ref.get("internal") and "refid" not in ref:
                continue
            target = _fragment(ref)
            if target not in claims:
                continue
            ref["classes"].append("claim-ref")
            new = link_text(target, ref.astext())
            if new is None:
                continue
            claim_id, note = new
            ref.children = []
            ref += nodes.literal(claim_id, claim_id, classes=["claim-id"])
            if note:
                ref += nodes.Text(" ")
                ref += nodes.inline(f"({note})", f"({note})", classes=["claim-number"])


def _clean_title(title: str, label: str) -> str:
    """sphinx-proof's title " (The bottleneck block's shapes — claim `x.y`)" -> "The bottleneck block's shapes"."""
    t = title.strip()
    if t.startswith("(") and t.endswith(")"):
        t = t[1:-1]
    t = re.sub(r"\s*[—–-]+\s*claim\s+`?" + re.escape(label) + r"`?\s*$", "", t)
    return t.replace("`", "").strip()


_TEX = [
    (re.compile(r"\\sqrt\{([^{}]*)\}"), r"√\1"),
    (re.compile(r"\\(?:text|mathrm|mathbf|mathit|operatorname)\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}"), r"\1/\2"),
]
_TEX_SYMBOLS = {
    "\\times": "×", "\\cdot": "·", "\\le": "≤", "\\leq": "≤", "\\ge": "≥", "\\geq": "≥", "\\ne": "≠",
    "\\neq": "≠", "\\to": "→", "\\rightarrow": "→", "\\approx": "≈", "\\infty": "∞", "\\sum": "Σ",
    "\\ldots": "…", "\\dots": "…", "\\varepsilon": "ε", "\\epsilon": "ε", "\\gamma": "γ", "\\beta": "β",
    "\\sigma": "σ", "\\mu": "μ", "\\lambda": "λ", "\\alpha": "α", "\\delta": "δ", "\\pi": "π", "\\top": "⊤",
    "\\lceil": "⌈", "\\rceil": "⌉", "\\lfloor": "⌊", "\\rfloor": "⌋", "\\circ": "∘", "\\,": " ", "\\ ": " ",
}


def plain_title(title: str) -> str:
    """A title as plain text for the claims index (an index entry is not typeset): ``$1\\times1$`` -> ``1×1``."""

    def math(m: re.Match) -> str:
        t = m.group(1)
        for pattern, repl in _TEX:
            t = pattern.sub(repl, t)
        for tex, sym in sorted(_TEX_SYMBOLS.items(), key=lambda kv: -len(kv[0])):
            t = re.sub(re.escape(tex) + r"(?![A-Za-z])", sym, t)
        return re.sub(r"[{}]|\\(?=[A-Za-z])", "", t)

    return re.sub(r"\$([^$]+)\$", math, title)


def _collect(app: Sphinx, doctree: nodes.document) -> None:
    env = app.env
    if not hasattr(env, "convbook_claims"):
        env.convbook_claims = {}
    for node in doctree.findall(nodes.Element):
        label = node.get("label") if "realtype" in node.attributes else None
        if label and is_claim_id(label):
            env.convbook_claims[label] = {
                "docname": env.docname,
                "title": _clean_title(str(node.get("title", "")), label),
                "realtype": node["realtype"],
                "countertype": node.get("countertype", node["realtype"]),
            }


def _purge(app: Sphinx, env: Any, docname: str) -> None:
    claims = getattr(env, "convbook_claims", {})
    for label in [k for k, v in claims.items() if v["docname"] == docname]:
        del claims[label]


def _merge(app: Sphinx, env: Any, docnames: Any, other: Any) -> None:
    if not hasattr(env, "convbook_claims"):
        env.convbook_claims = {}
    env.convbook_claims.update(getattr(other, "convbook_claims", {}))


def _number(env: Any, docname: str, countertype: str, label: str) -> tuple[int, ...]:
    try:
        return tuple(env.toc_fignumbers[docname][countertype][label])
    except (AttributeError, KeyError):
        return ()


def _claims_index_class():
    from sphinx_proof.domain import ProofIndex

    class ClaimsIndex(ProofIndex):
        """The Proof Index as a claims index: grouped by chapter, each id with its title and number."""

        localname = "Claims index"
        shortname = "Claims"

        def generate(self, docnames=None):  # noqa: ANN001, ANN201 - Sphinx's signature
            env = self.domain.env
            claims = getattr(env, "convbook_claims", {})
            groups: dict[tuple, list] = defaultdict(list)
            for label, info in claims.items():
                number = _number(env, info["docname"], info["countertype"], label)
                chapter = number[0] if number else 0
                kind = info["realtype"].title()
                entry = [label, 0, info["docname"], label, plain_title(info["title"]), "", f"{kind} {'.'.join(map(str, number))}".strip()]
                groups[(chapter, info["docname"])].append((number, entry))
            content = []
            for (chapter, docname) in sorted(groups):
                title = env.titles[docname].astext() if docname in env.titles else docname
                key = f"{chapter}" if chapter else title
                entries = [e for _, e in sorted(groups[(chapter, docname)], key=lambda x: x[0])]
                content.append((f"{key} {title}" if chapter else key, entries))
            return content, True

    return ClaimsIndex


def _replace_proof_index(app: Sphinx) -> None:
    from sphinx_proof.domain import ProofDomain

    ProofDomain.indices = [_claims_index_class()]


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx_proof")
    _replace_proof_index(app)
    app.add_post_transform(ClaimLinkText)
    app.connect("doctree-read", _collect)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
