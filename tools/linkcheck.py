"""Check every internal link of a built HTML book, offline.

    python tools/linkcheck.py _build/html            # exit 1 and list the broken ones
    python tools/linkcheck.py _build/html --claim-sources notebooks/src --repo-root .

For every ``.html`` file under the directory, every ``href``/``src`` (and ``srcset``,
``<object data>``) that points to a local file is resolved against the page and must
exist; a ``#fragment`` must be an ``id`` (or ``<a name>``) in the target page. Links with
a scheme (``https:``, ``mailto:``, ``data:``, ...) or a network location are external and
are not fetched. Uses only the standard library and never touches the network.

With ``--claim-sources DIR``, also checks that every claim block (``{prf:...}`` with a
``:label:``) in the chapter sources ``DIR/NN-name.md`` has its label as an element id in the
built ``notebooks/NN-name.html``: the anchor of a claim *is* its id, so links to claims
survive rebuilds and renumbering.

Always, it also reads the visible text of every page and fails on the language of the book's making rather
than of its subject — "issue", "session", "TODO", "audit" (``PROCESS_WORDS``): the book speaks to its readers.

With ``--repo-root DIR``, links into the book's own repository (``repository.url`` in
``DIR/_config.yml``: the "edit this page", source and Colab buttons, ``…/edit/BRANCH/PATH``,
``…/blob/BRANCH/PATH``, and Colab's ``…/github/OWNER/REPO/blob/BRANCH/PATH``) must name a file that exists in the checkout — still without network.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = [
    "BrokenLink", "PROCESS_WORDS", "check_site", "check_claim_anchors", "check_process_language", "check_repository_links",
    "claim_labels", "page_ids", "visible_text", "main",
]

# Pages that are copies of upstream assets rather than the book's own pages.
SKIP_DIRS = ("_static", "_sources")

LINK_ATTRS = {"href", "src", "data", "poster"}


@dataclass(frozen=True)
class BrokenLink:
    page: str
    target: str
    why: str

    def __str__(self) -> str:
        return f"{self.page}: {self.target} — {self.why}"


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v is not None}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        if tag == "base" and "href" in a:
            self.base = a["href"]
        if tag == "link" and a.get("rel", "") in ("canonical", "alternate"):
            return  # points at the published URL, not at a file of this build
        for key in LINK_ATTRS:
            if key in a and not (tag == "param"):
                self.links.append(a[key])
        if "srcset" in a:
            for part in a["srcset"].split(","):
                if part.strip():
                    self.links.append(part.strip().split()[0])

    handle_startendtag = handle_starttag


@lru_cache(maxsize=None)
def _parse(path: Path) -> _Collector:
    c = _Collector()
    c.feed(path.read_text(encoding="utf-8", errors="replace"))
    c.close()
    return c


def page_ids(path: Path) -> set[str]:
    """Every ``id`` (and ``<a name>``) in an HTML file: the anchors a link may point to."""
    return _parse(path.resolve()).ids


def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme) or bool(parts.netloc) or url.startswith("//")


def _html_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*.html") if not any(part in SKIP_DIRS for part in p.relative_to(root).parts[:-1])
    )


def check_site(root: Path | str) -> tuple[int, list[BrokenLink]]:
    """Check every internal link under ``root``; return (links checked, broken links)."""
    root = Path(root).resolve()
    if not (root / "index.html").is_file() and not any(root.glob("*.html")):
        raise ValueError(f"no HTML pages under {root}: build the book first (make book)")
    _parse.cache_clear()
    broken: list[BrokenLink] = []
    checked = 0
    for page in _html_files(root):
        rel_page = page.relative_to(root).as_posix()
        for raw in _parse(page).links:
            url = raw.strip()
            if not url or _is_external(url) or url.startswith("javascript:"):
                continue
            checked += 1
            parts = urlsplit(url)
            path_part = unquote(parts.path)
            target = page if not path_part else (page.parent / path_part).resolve()
            if path_part.endswith("/") or target.is_dir():
                target = target / "index.html"
            try:
                target.relative_to(root)
            except ValueError:
                broken.append(BrokenLink(rel_page, url, "points outside the built book"))
                continue
            if not target.is_file():
                broken.append(BrokenLink(rel_page, url, "file does not exist"))
                continue
            frag = unquote(parts.fragment)
            if frag and target.suffix == ".html" and frag not in page_ids(target):
                broken.append(BrokenLink(rel_page, url, f"no element with id '{frag}' in {target.relative_to(root)}"))
    return checked, broken


_PRF_BLOCK = re.compile(r"^(?P<fence>:{3,}|`{3,})\{prf:[a-z]+\}[^\n]*\n(?P<opts>(?:[ \t]*:[a-z-]+:[^\n]*\n)*)", re.M)
_LABEL = re.compile(r"^[ \t]*:label:[ \t]*(\S+)", re.M)


def claim_labels(source: Path | str) -> list[str]:
    """The labels of the ``{prf:...}`` blocks of a MyST Markdown source, in order."""
    text = Path(source).read_text(encoding="utf-8")
    out = []
    for m in _PRF_BLOCK.finditer(text):
        lab = _LABEL.search(m.group("opts"))
        if lab:
            out.append(lab.group(1))
    return out


def check_claim_anchors(html_root: Path | str, sources: Path | str) -> tuple[int, list[BrokenLink]]:
    """Every claim label in ``sources/*.md`` is an element id of the built chapter page."""
    html_root, sources = Path(html_root).resolve(), Path(sources)
    broken: list[BrokenLink] = []
    checked = 0
    for src in sorted(sources.glob("*.md")):
        page = html_root / "notebooks" / f"{src.stem}.html"
        rel = page.relative_to(html_root).as_posix()
        labels = claim_labels(src)
        if labels and not page.is_file():
            broken.append(BrokenLink(rel, src.as_posix(), "chapter with claims was not built"))
            continue
        ids = page_ids(page) if labels else set()
        for label in labels:
            checked += 1
            if label not in ids:
                broken.append(BrokenLink(rel, f"#{label}", f"claim {label} of {src.as_posix()} has no anchor with its id"))
    return checked, broken


def check_repository_links(html_root: Path | str, repo_root: Path | str) -> tuple[int, list[BrokenLink]]:
    """Every link of the built book into its own repository names a file of this checkout."""
    import yaml

    html_root, repo_root = Path(html_root).resolve(), Path(repo_root).resolve()
    repo = yaml.safe_load((repo_root / "_config.yml").read_text(encoding="utf-8")).get("repository", {})
    url, branch = repo.get("url", "").rstrip("/"), repo.get("branch", "main")
    if not url:
        return 0, []
    host, path = urlsplit(url).netloc, urlsplit(url).path
    # github.com/OWNER/REPO/edit/BRANCH/PATH, and Colab's colab.research.google.com/github/OWNER/REPO/blob/BRANCH/PATH
    prefix = re.compile(rf"(?:^{re.escape(host)}|/github){re.escape(path)}/(?:edit|blob|tree|raw)/{re.escape(branch)}/(.+)$")
    broken: list[BrokenLink] = []
    checked = 0
    for page in _html_files(html_root):
        for raw in _parse(page).links:
            parts = urlsplit(raw.strip())
            m = prefix.search(parts.netloc + parts.path) if parts.netloc else None
            if not m:
                continue
            checked += 1
            if not (repo_root / unquote(m.group(1))).exists():
                rel = page.relative_to(html_root).as_posix()
                broken.append(BrokenLink(rel, raw, f"{m.group(1)} is not a file of the repository"))
    return checked, broken


# Words about how the book was made, not about convolutions. "TODO" only in capitals; the others in any case.
PROCESS_WORDS = re.compile(r"\b(?:(?i:the issue behind|issues?|sessions?|audit(?:s|ed|ing|ors?)?)|TODO)\b")
_INVISIBLE = re.compile(r"(?is)<(script|style|template|noscript)\b.*?</\1\s*>")
_TAG = re.compile(r"<[^>]+>")


def visible_text(html_text: str) -> str:
    """The text of an HTML page as a reader sees it (no scripts, styles or markup), whitespace collapsed."""
    import html as _html

    text = _html.unescape(_TAG.sub(" ", _INVISIBLE.sub(" ", html_text)))
    return re.sub(r"\s+", " ", text)


def check_process_language(root: Path | str) -> tuple[int, list[BrokenLink]]:
    """Every page's visible text is free of ``PROCESS_WORDS``; returns (pages read, one finding per hit)."""
    root = Path(root).resolve()
    found: list[BrokenLink] = []
    pages = _html_files(root)
    for page in pages:
        text = visible_text(page.read_text(encoding="utf-8", errors="replace"))
        for m in PROCESS_WORDS.finditer(text):
            context = text[max(0, m.start() - 50) : m.end() + 50].strip()
            found.append(BrokenLink(page.relative_to(root).as_posix(), f"«…{context}…»",
                                    f"speaks of the book's making ('{m.group(0)}'), not to its reader"))
    return len(pages), found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html_dir", nargs="?", default="_build/html")
    ap.add_argument("--claim-sources", default=None, help="chapter sources (notebooks/src) whose claim anchors to check")
    ap.add_argument("--repo-root", default=None, help="checkout whose files the repository links must name")
    args = ap.parse_args(argv)
    try:
        checked, broken = check_site(args.html_dir)
    except ValueError as e:
        print(f"linkcheck: {e}", file=sys.stderr)
        return 2
    pages = len(_html_files(Path(args.html_dir).resolve()))
    anchors = ""
    if args.claim_sources:
        n, more = check_claim_anchors(args.html_dir, args.claim_sources)
        broken += more
        anchors = f", {n} claim anchors"
    if args.repo_root:
        n, more = check_repository_links(args.html_dir, args.repo_root)
        broken += more
        anchors += f", {n} repository links"
    _, process = check_process_language(args.html_dir)
    broken += process
    wording = f"; process language: {'none' if not process else f'{len(process)} hit(s)'}"
    for b in broken:
        print(f"BROKEN {b}")
    status = "ok" if not broken else f"{len(broken)} broken"
    print(f"linkcheck: {pages} pages, {checked} internal links and images{anchors} checked{wording}, {status}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
