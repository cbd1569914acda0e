"""Read the built book as a reader would: every page in headless Chromium, offline.

    python tools/browser_check.py _build/html [--screenshots _build/screenshots]

Serves the directory from a local ``http.server`` on 127.0.0.1 (a free port), opens it in
Debian's ``/usr/bin/chromium`` driven by Playwright (an empty profile, no network: every
request to another host is blocked and reported), and for every page

* waits for the page to load and for MathJax to finish typesetting;
* fails on a console error, an uncaught exception, a failed request or an HTTP error;
* fails on an image that did not load;
* fails on unrendered TeX: a MathJax error node, or ``$``, ``\\(``, ``\\[``, ``\\begin{``
  left in the visible text outside code (after MathJax has run);
* records the page's element ids, then checks every internal link of every page: the target
  page exists and, for ``#fragment`` links, holds an element with that id;
* reads every page at two widths, a laptop (1280 px) and a phone (390 px), and fails on evidence a reader
  cannot read whole: an output, formula, table or other element of the text that is clipped (content wider than
  a box with ``overflow: hidden``), an element that needs sideways scrolling at 1280 px, anything sticking out of
  the text column, or a page wider than the viewport at 390 px. At 390 px only a display equation
  (``div.math``) or a table (its scroll wrapper) may scroll, inside its own box;
* fails on a link to a claim (a ``div.proof`` block whose id is a claim id) whose text does not show the
  claim's id: readers cite the id.

It also runs a search (``search.html?q=convolution``) and expects results, and saves
screenshots of the first chapter (its top, and its first claim block) for a human to look
at, the claim block also at each narrower width. Exit status 1 when anything failed; the problems are listed one per line.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "Report", "check_book", "serve", "main"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FIRST_CHAPTER = "notebooks/01-convolution.html"
SKIP_DIRS = ("_static", "_sources", "_images")
PAGE_TIMEOUT_MS = 30_000
WIDTHS = (1280, 390)  # a laptop and a phone (iPhone 12-15: 390 x 844 CSS px)
HEIGHTS = {1280: 900, 390: 844}
MAX_LAYOUT_LINES = 6  # per page and width: the first few problems are listed, the rest counted
CLAIM_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)+$")  # convbook.claims.ID_PATTERN

# Runs in the page after load: wait for MathJax (when the page loads it), make lazy images
# load, then report what a reader would see wrong.
_INSPECT_JS = r"""
async () => {
  const out = {mathjax: false, containers: 0, errors: [], tex: [], images: [], ids: [], links: []};
  if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
    out.mathjax = true;
    await window.MathJax.startup.promise;
    if (window.MathJax.typesetPromise) { await window.MathJax.typesetPromise(); }
  }
  const imgs = Array.from(document.images);
  for (const img of imgs) { if (img.loading === 'lazy') img.loading = 'eager'; }
  await Promise.all(imgs.map(img => img.complete ? null : new Promise(r => {
    img.addEventListener('load', r); img.addEventListener('error', r); setTimeout(r, 10000);
  })));
  for (const img of imgs) {
    if (!img.complete || img.naturalWidth === 0) out.images.push(img.getAttribute('src') || '(no src)');
  }
  out.containers = document.querySelectorAll('mjx-container').length;
  for (const e of document.querySelectorAll('mjx-merror, [data-mjx-error], .MathJax_Error, mjx-container [style*="color: red"]')) {
    out.errors.push((e.getAttribute('data-mjx-error') || e.textContent || '').slice(0, 120));
  }
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('script, style, noscript, template, textarea, pre, code, kbd, samp, .highlight, mjx-container, mjx-assistive-mml, svg').forEach(e => e.remove());
  const text = clone.textContent;
  const re = /\$|\\\(|\\\[|\\begin\{/g;
  let m;
  while ((m = re.exec(text)) !== null && out.tex.length < 5) {
    out.tex.push(text.slice(Math.max(0, m.index - 40), m.index + 40).replace(/\s+/g, ' '));
  }
  out.ids = Array.from(document.querySelectorAll('[id]'), e => e.id)
    .concat(Array.from(document.querySelectorAll('a[name]'), e => e.getAttribute('name')));
  out.links = Array.from(document.querySelectorAll('a[href]'), a => a.href);
  // Claim blocks (their id is the claim id) and the text of every link into a page (permalinks excluded).
  out.claims = Array.from(document.querySelectorAll('div.proof[id]'), e => e.id);
  out.anchor_links = Array.from(document.querySelectorAll('a[href*="#"]:not(.headerlink)'),
    a => [a.href, a.textContent.replace(/\s+/g, ' ').trim()]);
  return out;
}
"""

# Runs in the page at the current viewport width: is every piece of the text readable whole?
# Returns {checked, page_width, viewport, problems: [[kind, where], ...]}.
_LAYOUT_JS = r"""
async (narrow) => {
  // Let the page react to the new width first (convbook.js fits formulas on 'resize').
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const out = {checked: 0, page_width: 0, viewport: 0, problems: []};
  const de = document.documentElement;
  out.viewport = de.clientWidth;
  out.page_width = Math.max(de.scrollWidth, document.body ? document.body.scrollWidth : 0);
  const root = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const rootRight = root.getBoundingClientRect().right;
  // What a reader reads: outputs, code, formulas, tables, blocks and paragraphs of the text.
  const SEL = 'div.cell_output, div.output, pre, div.highlight, span.math, div.math, mjx-container, table, ' +
              '.pst-scrollable-table-container, .table-wrapper, div.admonition, div.proof, img, figure, ' +
              'p, li, dd, dt, blockquote, h1, h2, h3, h4, code';
  // At 390 px, only a display equation or a table may scroll, inside its own box.
  // Boxes whose text must stay inside them (an unwrapped output line runs past its box and over the margin).
  const RUNS_OUT = 'pre, div.cell_output, div.output, p, li, td, th, dd';
  const MAY_SCROLL = 'div.math, span.math.math-wide, .pst-scrollable-table-container, .table-wrapper';
  const describe = (el) => {
    let tag = el.tagName.toLowerCase();
    if (el.classList.length) tag += '.' + Array.from(el.classList).slice(0, 2).join('.');
    const mml = el.querySelector('mjx-assistive-mml');
    let text = mml ? 'formula ' + mml.textContent : el.textContent;
    text = (text || '').replace(/\s+/g, ' ').trim().slice(0, 70);
    return `${tag} «${text}»`;
  };
  const scrollsInside = (el) => {  // an ancestor inside the text that scrolls sideways holds it
    for (let a = el.parentElement; a && a !== root; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX;
      if (ox === 'auto' || ox === 'scroll') return true;
    }
    return false;
  };
  for (const el of root.querySelectorAll(SEL)) {
    if (el.closest('mjx-assistive-mml, .visually-hidden, .sr-only, [hidden]')) continue;
    if (el.tagName.toLowerCase() === 'mjx-container' && el.parentElement && el.parentElement.closest('mjx-container')) continue;
    const cs = getComputedStyle(el);
    if (cs.display === 'none' || cs.visibility === 'hidden') continue;
    const rect = el.getBoundingClientRect();
    if (rect.width === 0 && rect.height === 0) continue;
    out.checked += 1;
    const ox = cs.overflowX, sw = el.scrollWidth, cw = el.clientWidth;
    if (cw > 0 && sw > cw + 1) {
      if (ox === 'hidden' || ox === 'clip') {
        out.problems.push(['clipped', `${describe(el)} is cut off: ${sw}px of content in a ${cw}px box`]);
        continue;
      }
      if (ox === 'auto' || ox === 'scroll') {
        if (!narrow || !el.matches(MAY_SCROLL)) {
          out.problems.push(['scroll', `${describe(el)} needs sideways scrolling: ${sw}px of content in a ${cw}px box`]);
        }
        continue;
      }
    }
    if (ox === 'visible' && cw > 0 && sw > cw + 2 && el.matches(RUNS_OUT) && !scrollsInside(el)) {
      out.problems.push(['runs out', `${describe(el)} runs out of its box: ${sw}px of content in a ${cw}px box`]);
      continue;
    }
    if (rect.right > rootRight + 1 && !scrollsInside(el)) {
      out.problems.push(['sticks out', `${describe(el)} sticks out of the text column by ${Math.round(rect.right - rootRight)}px`]);
    }
  }
  return out;
}
"""

_SCROLL_TO_CLAIM_JS = r"""
() => {
  const el = document.querySelector('div.proof') || document.querySelector('mjx-container[display="true"]');
  if (!el) return false;
  const header = document.querySelector('header');
  window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - (header ? header.offsetHeight : 0) - 16);
  return true;
}
"""


@dataclass
class Report:
    pages: int = 0
    math_pages: int = 0
    formulas: int = 0
    links: int = 0
    claim_links: int = 0
    elements: dict[int, int] = field(default_factory=dict)  # width -> elements checked for layout
    layout_problems: dict[int, int] = field(default_factory=dict)  # width -> problems found at that width
    problems: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        status = "ok" if self.ok else f"{len(self.problems)} problem(s)"
        widths = "; ".join(
            f"{w} px: {self.elements.get(w, 0)} elements, {self.layout_problems.get(w, 0)} layout problems"
            for w in sorted(self.elements, reverse=True)
        )
        return (
            f"browser check: {self.pages} pages in Chromium, {self.formulas} formulas typeset by MathJax on "
            f"{self.math_pages} pages, {self.links} internal links followed, {self.claim_links} claim links show "
            f"their id; {widths or 'layout not checked'}; {status} ({self.seconds:.1f} s)"
        )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 - stdlib signature
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # the browser leaving a page early is not an error


class serve:
    """Context manager: serve ``root`` on 127.0.0.1 at a free port; yields the base URL."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return self.base

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _pages(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.html")
        if not any(part in SKIP_DIRS for part in p.relative_to(root).parts[:-1])
    )


_REFRESH = re.compile(r'<meta[^>]+http-equiv="refresh"[^>]+url=([^"\'>]+)', re.I)


def check_book(
    html_dir: Path | str,
    screenshot_dir: Path | str | None = None,
    chromium: str = CHROMIUM,
    search_term: str | None = "convolution",
    widths: tuple[int, ...] = WIDTHS,
) -> Report:
    """Open every page of the built book in headless Chromium and report what is wrong.

    Each page is loaded once at ``widths[0]`` and then re-laid out at every other width (the
    viewport is resized; MathJax's output does not depend on it).
    """
    from playwright.sync_api import sync_playwright

    root = Path(html_dir).resolve()
    pages = _pages(root)
    if not pages:
        raise ValueError(f"no HTML pages under {root}: build the book first (make book)")
    if not Path(chromium).exists():
        raise ValueError(f"no Chromium at {chromium}: install Debian's package (apt-get install -y chromium)")
    report = Report()
    start = time.perf_counter()
    ids: dict[str, set[str]] = {}
    links: dict[str, set[str]] = {}  # internal link (without the base) -> pages that hold it
    claims: dict[str, set[str]] = {}  # page path -> claim ids anchored there
    anchor_links: list[tuple[str, str, str]] = []  # (page, link without the base, link text)
    current = {"page": ""}

    def problem(msg: str) -> None:
        report.problems.append(f"{current['page'] or '(browser)'}: {msg}")

    profile = tempfile.mkdtemp(prefix="convbook-chromium-")
    try:
        with serve(root) as base, sync_playwright() as pw:
            host = urlsplit(base).netloc
            # No request leaves the machine: every host but the local server goes to a proxy that does not exist
            # (loopback bypasses it), so the request fails; the "request" listener reports it. Unlike routing every
            # request through Python, this keeps Chromium's cache, so each page loads MathJax from memory.
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=chromium,
                args=[*CHROMIUM_ARGS, "--proxy-server=http://127.0.0.1:9", f"--proxy-bypass-list={host.split(':')[0]}"],
                headless=True,
                viewport={"width": widths[0], "height": HEIGHTS.get(widths[0], 900)},
                offline=False,
            )

            def outside(r) -> None:  # noqa: ANN001 - a Playwright Request
                if urlsplit(r.url).netloc != host and not r.url.startswith(("data:", "blob:")):
                    problem(f"request to another host blocked: {r.url}")

            context.on("request", outside)
            page = context.pages[0] if context.pages else context.new_page()
            page.on("console", lambda m: m.type == "error" and problem(f"console error: {m.text}"))
            page.on("pageerror", lambda e: problem(f"uncaught exception: {e}"))
            page.on(
                "requestfailed",  # ERR_ABORTED: the next navigation cancelled it (a favicon); a 404 shows as HTTP 404
                lambda r: "ERR_ABORTED" not in (r.failure or "") and urlsplit(r.url).netloc == host
                and problem(f"request failed: {r.url} ({r.failure})"),
            )
            page.on("response", lambda r: r.status >= 400 and problem(f"HTTP {r.status}: {r.url}"))

            for rel in pages:
                current["page"] = rel
                html = (root / rel).read_text(encoding="utf-8", errors="replace")
                refresh = _REFRESH.search(html)
                if refresh and len(html) < 2000:  # a redirect stub (index.html): check its target instead
                    target = urldefrag(refresh.group(1).strip())[0]
                    links.setdefault(urlsplit(base + Path(rel).parent.joinpath(target).as_posix()).path, set()).add(rel)
                    continue
                page.goto(base + rel, wait_until="load", timeout=PAGE_TIMEOUT_MS)
                info = page.evaluate(_INSPECT_JS)
                report.pages += 1
                if info["mathjax"]:
                    report.math_pages += 1
                    report.formulas += info["containers"]
                has_math_source = 'class="math' in html
                if has_math_source and not info["mathjax"]:
                    problem("the page has mathematics but MathJax did not load")
                for e in info["errors"]:
                    problem(f"MathJax error: {e}")
                for t in info["tex"]:
                    problem(f"unrendered TeX in the text: …{t}…")
                for src in info["images"]:
                    problem(f"image did not load: {src}")
                ids[urlsplit(page.url).path] = set(info["ids"])
                for href in info["links"]:
                    if href.startswith(base):
                        links.setdefault(href[len(base) - 1 :], set()).add(rel)
                claims[urlsplit(page.url).path] = {c for c in info["claims"] if CLAIM_ID.match(c)}
                for href, text in info["anchor_links"]:
                    if href.startswith(base):
                        anchor_links.append((rel, href[len(base) - 1 :], text))
                for i, width in enumerate(widths):
                    if i:
                        page.set_viewport_size({"width": width, "height": HEIGHTS.get(width, 900)})
                    _check_layout(page, width, narrow=width < 600, report=report, problem=problem)
                    if i and rel == FIRST_CHAPTER and screenshot_dir is not None:  # the chapter on a phone
                        Path(screenshot_dir).mkdir(parents=True, exist_ok=True)
                        phone = Path(screenshot_dir) / f"01-convolution-{width}px.png"
                        if page.evaluate(_SCROLL_TO_CLAIM_JS):
                            page.screenshot(path=str(phone))
                            report.screenshots.append(phone)
                if len(widths) > 1:
                    page.set_viewport_size({"width": widths[0], "height": HEIGHTS.get(widths[0], 900)})
                if rel == FIRST_CHAPTER and screenshot_dir is not None:
                    out = Path(screenshot_dir)
                    out.mkdir(parents=True, exist_ok=True)
                    top = out / "01-convolution.png"
                    page.screenshot(path=str(top))
                    report.screenshots.append(top)
                    # The first claim block, scrolled to the top: its statement and the mathematics around it.
                    if page.evaluate(_SCROLL_TO_CLAIM_JS):
                        eq = out / "01-convolution-claim.png"
                        page.screenshot(path=str(eq))
                        report.screenshots.append(eq)

            current["page"] = "search.html"
            if search_term and "search.html" in pages:
                page.goto(f"{base}search.html?q={search_term}", wait_until="load", timeout=PAGE_TIMEOUT_MS)
                try:
                    page.wait_for_selector("#search-results ul.search li", timeout=15_000)
                except Exception:  # noqa: BLE001 - reported as a problem, not raised
                    problem(f"searching for '{search_term}' found nothing")

            # Every link to a claim shows the claim's id: readers cite the id, not "Proposition 8.1".
            current["page"] = ""
            for where, link, text in anchor_links:
                path, frag = urldefrag(link)
                if path.endswith("/"):
                    path += "index.html"
                claim = unquote(frag)
                if claim in claims.get(path, ()):
                    report.claim_links += 1
                    if claim not in text:
                        report.problems.append(f"{where}: the link to claim {claim} reads «{text}», not the claim id")

            # Every internal link: the file exists (an HTTP 200 from the server), and its fragment is an id.
            for link in sorted(links):
                path, frag = urldefrag(link)
                report.links += 1
                where = sorted(links[link])[0]
                if path.endswith("/"):
                    path += "index.html"
                if path not in ids:
                    local = root / unquote(path.lstrip("/"))
                    if not local.is_file():
                        report.problems.append(f"{where}: broken link {link} (no such file)")
                    elif frag and local.suffix == ".html":
                        report.problems.append(f"{where}: link {link} into a page that was not visited")
                    continue
                if frag and unquote(frag) not in ids[path]:
                    report.problems.append(f"{where}: broken link {link} (no element with id '{unquote(frag)}')")
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    report.seconds = time.perf_counter() - start
    return report


def _check_layout(page, width: int, *, narrow: bool, report: Report, problem) -> None:  # noqa: ANN001
    """Lay the page out at ``width`` and record what a reader could not read whole."""
    info = page.evaluate(_LAYOUT_JS, narrow)
    report.elements[width] = report.elements.get(width, 0) + info["checked"]
    found = [f"at {width} px: {where}" for _, where in info["problems"]]
    if narrow and info["page_width"] > info["viewport"] + 1:
        found.insert(0, f"at {width} px: the page is {info['page_width']}px wide, wider than the {info['viewport']}px screen")
    report.layout_problems[width] = report.layout_problems.get(width, 0) + len(found)
    for msg in found[:MAX_LAYOUT_LINES]:
        problem(msg)
    if len(found) > MAX_LAYOUT_LINES:
        problem(f"at {width} px: … and {len(found) - MAX_LAYOUT_LINES} more layout problems on this page")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html_dir", nargs="?", default="_build/html")
    ap.add_argument("--screenshots", default=None, help="folder for the first chapter's screenshots")
    ap.add_argument("--chromium", default=CHROMIUM)
    args = ap.parse_args(argv)
    try:
        report = check_book(args.html_dir, args.screenshots, args.chromium)
    except ValueError as e:
        print(f"browser check: {e}", file=sys.stderr)
        return 2
    for p in report.problems:
        print(f"FAIL {p}")
    for s in report.screenshots:
        print(f"screenshot: {s}")
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
