"""The book's publishing checks must catch what they claim to catch.

tools/linkcheck.py and tools/browser_check.py are run by `make test-browser` on the built book.
Here each is run on a tiny synthetic site: a clean site passes, and each planted defect (a missing
page, a missing anchor, a broken image, raw TeX, a MathJax error, a console error, a request to
another host) is reported. The browser half needs Debian's chromium (`make chromium`) and is skipped
without it; the static half always runs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


linkcheck = _load("linkcheck")
browser_check = _load("browser_check")

# A 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5f1"
    "b7e70000000049454e44ae426082"
)


def _page(body: str, head: str = "") -> str:
    style = "<style>pre { white-space: pre-wrap; }</style>"  # as the book's convbook.css does
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'>{style}{head}</head><body>{body}</body></html>"


def _site(tmp_path: Path, pages: dict[str, str]) -> Path:
    root = tmp_path / "html"
    (root / "_images").mkdir(parents=True)
    (root / "_images" / "dot.png").write_bytes(PNG)
    (root / "favicon.ico").write_bytes(PNG)  # Chromium asks every site for one
    for rel, html in pages.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(html, encoding="utf-8")
    return root


CLEAN = {
    "index.html": _page('<h1 id="top">Book</h1><a href="ch/one.html#claim.a">a</a> <a href="#top">top</a>'
                        '<a href="https://example.org/">outside</a><img src="_images/dot.png" alt="">'),
    "ch/one.html": _page('<div id="claim.a">A</div><a href="../index.html">home</a><img src="../_images/dot.png" alt="">'),
}


# --------------------------------------------------------------------------- static link check


def test_linkcheck_clean_site_passes(tmp_path):
    checked, broken = linkcheck.check_site(_site(tmp_path, CLEAN))
    assert broken == []
    assert checked == 5  # two links + one anchor on index, one link on ch/one, two images; the external one is skipped


@pytest.mark.parametrize(
    "defect, why",
    [
        ('<a href="ch/two.html">x</a>', "file does not exist"),
        ('<a href="ch/one.html#claim.b">x</a>', "no element with id 'claim.b'"),
        ('<a href="#nowhere">x</a>', "no element with id 'nowhere'"),
        ('<img src="_images/missing.png" alt="">', "file does not exist"),
        ('<a href="../../etc/passwd">x</a>', "points outside the built book"),
    ],
)
def test_linkcheck_reports_each_defect(tmp_path, defect, why):
    pages = dict(CLEAN)
    pages["index.html"] = _page(defect)
    _, broken = linkcheck.check_site(_site(tmp_path, pages))
    assert len(broken) == 1 and why in broken[0].why, broken


def test_linkcheck_refuses_an_empty_directory(tmp_path):
    with pytest.raises(ValueError, match="no HTML pages"):
        linkcheck.check_site(tmp_path)


def test_claim_anchors_are_the_labels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "01-one.md").write_text(
        "# One\n\n:::{prf:proposition} A — claim `claim.a`\n:label: claim.a\nText.\n:::\n\n"
        "::::{prf:theorem} B\n:label: claim.b\n:class: x\nText.\n::::\n\n```{code-cell}\n:label: not-a-claim\n```\n",
        encoding="utf-8",
    )
    assert linkcheck.claim_labels(src / "01-one.md") == ["claim.a", "claim.b"]
    root = _site(tmp_path, {"index.html": _page(""), "notebooks/01-one.html": _page('<div id="claim.a"></div>')})
    checked, broken = linkcheck.check_claim_anchors(root, src)
    assert checked == 2
    assert [b.target for b in broken] == ["#claim.b"]


# --------------------------------------------------------------------------- the browser

needs_chromium = pytest.mark.skipif(
    not Path(browser_check.CHROMIUM).exists(), reason="Debian's chromium is not installed (make chromium)"
)


def _mathjax_dir() -> Path:
    """The offline MathJax 3 that the book ships (the sphinx-mathjax-offline package's copy)."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    assert spec is not None and spec.origin, "sphinx-mathjax-offline is not installed"
    return Path(spec.origin).parent / "static" / "mathjax"


MATHJAX_HEAD = (
    '<script>window.MathJax = {"options": {"processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"}}</script>'
    '<script defer src="/_static/mathjax/tex-chtml.js"></script>'
)


def _browser_site(tmp_path: Path, body: str, extra_head: str = "") -> Path:
    root = _site(tmp_path, {
        "index.html": _page('<p class="tex2jax_ignore mathjax_ignore">Sum <span class="math notranslate nohighlight">'
                            r"\(\sum_{m=0}^{K-1} w[m]\,x[n+m]\)</span>.</p>"
                            '<div class="math notranslate nohighlight">\\[y = W x\\]</div>'
                            '<a href="ch/one.html#claim.a">claim</a><img src="_images/dot.png" alt="">'
                            '<pre>$ make test   # a shell prompt inside code is not TeX</pre>', MATHJAX_HEAD),
        "ch/one.html": _page('<div id="claim.a">A</div>' + body, MATHJAX_HEAD + extra_head),
    })
    (root / "_static").mkdir()
    (root / "_static" / "mathjax").symlink_to(_mathjax_dir(), target_is_directory=True)
    return root


@needs_chromium
def test_browser_clean_site_passes_and_typesets(tmp_path):
    report = browser_check.check_book(_browser_site(tmp_path, "<p>plain text</p>"), search_term=None)
    assert report.problems == []
    assert report.pages == 2 and report.math_pages == 2
    assert report.formulas == 2  # the inline sum and the display equation were typeset


@needs_chromium
def test_browser_reports_planted_defects(tmp_path):
    body = (
        "<p>Raw dollars $x^2$ the parser missed.</p>"
        '<p><span class="math">\\(\\frac{1}{\\undefinedmacro}\\)</span></p>'
        '<img src="../_images/missing.png" alt="">'
        '<a href="../index.html#no-such-anchor">back</a>'
    )
    head = "<script>console.error('boom')</script><script src='https://cdn.example.org/x.js'></script>"
    report = browser_check.check_book(_browser_site(tmp_path, body, head), search_term=None)
    text = "\n".join(report.problems)
    assert "unrendered TeX in the text: …" in text and "$x^2$" in text
    assert "MathJax error" in text
    assert "image did not load: ../_images/missing.png" in text
    assert "HTTP 404" in text
    assert "console error: boom" in text
    assert "request to another host blocked: https://cdn.example.org/x.js" in text
    assert "broken link /index.html#no-such-anchor" in text


# --------------------------------------------------------------------------- the configuration


def test_config_loads_every_extension_and_no_thebe():
    """_config.yml replaces jupyter-book's extension list (to drop sphinx_thebe, whose duplicated
    `const THEBE_JS_URL` throws in the browser); an extension named only in extra_extensions would be lost."""
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    loaded = cfg["sphinx"]["config"]["extensions"]
    assert "sphinx_thebe" not in loaded
    missing = [e for e in cfg["sphinx"].get("extra_extensions", []) if e not in loaded]
    assert not missing, f"add {missing} to sphinx.config.extensions in _config.yml"
    assert cfg["sphinx"].get("recursive_update") is True  # html_theme_options merges with the theme options


def test_citation_cff_matches_the_package_version():
    import tomllib

    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert cff["cff-version"] == "1.2.0" and cff["title"] == "Convolutions, Verified"
    assert str(cff["version"]) == version == str(cff["preferred-citation"]["edition"])
    assert f"v{version}" in (ROOT / "book" / "how-to-cite.md").read_text(encoding="utf-8")


def test_repository_links_must_name_files_of_the_checkout(tmp_path):
    repo = tmp_path / "repo"
    (repo / "notebooks" / "src").mkdir(parents=True)
    (repo / "notebooks" / "src" / "01-one.md").write_text("# One\n", encoding="utf-8")
    (repo / "_config.yml").write_text("repository:\n  url: https://github.com/o/r\n  branch: main\n", encoding="utf-8")
    url = "https://github.com/o/r"
    root = _site(tmp_path, {"index.html": _page(
        f'<a href="{url}/edit/main/notebooks/src/01-one.md">edit</a>'
        f'<a href="{url}/edit/main/notebooks/src/02-two.md">edit</a>'
        f'<a href="https://colab.research.google.com/github/o/r/blob/main/notebooks/01-one.ipynb">colab</a>'
        f'<a href="{url}">repo</a><a href="https://github.com/other/r/edit/main/x.md">other</a>')})
    checked, broken = linkcheck.check_repository_links(root, repo)
    assert checked == 3
    assert sorted(b.target.rsplit("/", 1)[1] for b in broken) == ["01-one.ipynb", "02-two.md"]


def test_config_loads_the_local_extension_and_the_stylesheet():
    """_ext/convbook_claims.py must be on sys.path (local_extensions) AND in the extension list Sphinx loads."""
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    local = cfg["sphinx"].get("local_extensions", {})
    assert local.get("convbook_claims") == "_ext" and (ROOT / "_ext" / "convbook_claims.py").is_file()
    assert "convbook_claims" in cfg["sphinx"]["config"]["extensions"]
    static = cfg["sphinx"]["config"]["html_static_path"]
    for name in cfg["sphinx"]["config"]["html_css_files"] + cfg["sphinx"]["config"]["html_js_files"]:
        assert any((ROOT / d / name).is_file() for d in static), name


# --------------------------------------------------------------------------- claim ids in links (build time)

sys.path.insert(0, str(ROOT / "_ext"))
import convbook_claims  # noqa: E402


@pytest.mark.parametrize(
    "claim, text, expected",
    [
        ("shortcut.rank", "Proposition 8.3", ("shortcut.rank", "Prop. 8.3")),
        ("bn.fold-conv", "Theorem 6.1", ("bn.fold-conv", "Thm. 6.1")),
        ("conv.matrix", "the matrix form", ("conv.matrix", "the matrix form")),
        ("conv.matrix", "claim conv.matrix", None),  # already shows the id
    ],
)
def test_claim_link_text(claim, text, expected):
    assert convbook_claims.link_text(claim, text) == expected


def test_claim_ids_follow_the_library_pattern():
    from convbook.claims import ID_PATTERN

    assert convbook_claims.CLAIM_ID.pattern == ID_PATTERN
    assert browser_check.CLAIM_ID.pattern == ID_PATTERN
    assert convbook_claims.is_claim_id("shortcut.bottleneck-shapes") and not convbook_claims.is_claim_id("proof-content")


def test_sphinx_build_shows_the_claim_id_in_links(tmp_path):
    """A tiny Sphinx project with a sphinx-proof claim and a {prf:ref} to it: the built link reads the id."""
    from sphinx.application import Sphinx

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        f"import sys; sys.path.insert(0, {str(ROOT / '_ext')!r})\n"
        "extensions = ['sphinx_proof', 'convbook_claims']\nnumfig = True\n", encoding="utf-8")
    (src / "index.rst").write_text(
        "Book\n====\n\n.. toctree::\n   :numbered:\n\n   one\n", encoding="utf-8")
    (src / "one.rst").write_text(
        "One\n===\n\n.. prf:proposition:: Shapes match — claim ``shortcut.bottleneck-shapes``\n"
        "   :label: shortcut.bottleneck-shapes\n\n   Text.\n\n"
        ".. prf:definition:: Not a claim\n   :label: notaclaim\n\n   Text.\n\n"
        "See :prf:ref:`shortcut.bottleneck-shapes` and :prf:ref:`notaclaim`.\n", encoding="utf-8")
    out = tmp_path / "html"
    app = Sphinx(str(src), str(src), str(out), str(tmp_path / "doctrees"), "html", status=None, warning=None,
                 freshenv=True)
    app.build()
    html = (out / "one.html").read_text(encoding="utf-8")
    link = html[html.index('href="#shortcut.bottleneck-shapes"') - 60:]
    link = link[: link.index("</a>")]
    assert "claim-ref" in link and "shortcut.bottleneck-shapes" in link and "(Prop. 1.1)" in link, link
    assert '<a class="reference internal" href="#notaclaim">Definition 1.1</a>' in html  # labels that are not ids
    index = (out / "prf-prf.html").read_text(encoding="utf-8")
    assert "Claims index" in index and "Shapes match" in index and "shortcut.bottleneck-shapes" in index
    assert "notaclaim" not in index


# --------------------------------------------------------------------------- readable whole at 1280 and 390 px

ARTICLE = '<main><article class="bd-article" style="max-width: {w}px">{body}</article></main>'
LONG = "✓ claim.a — random layers vs F.conv2d, float64, 59 layers, max rel. error 4.1e-16 (tol 1e-12) " * 3


def _layout_site(tmp_path: Path, body: str, width: int = 700) -> Path:
    html = _page(ARTICLE.format(w=width, body=body), '<meta name="viewport" content="width=device-width">')
    return _site(tmp_path, {"index.html": html})


@needs_chromium
def test_layout_wrapped_output_passes_at_both_widths(tmp_path):
    body = f'<div class="cell_output"><pre style="white-space: pre-wrap; overflow-wrap: anywhere">{LONG}</pre></div>'
    report = browser_check.check_book(_layout_site(tmp_path, body), search_term=None)
    assert report.problems == [], report.problems
    assert report.elements[1280] >= 2 and report.elements[390] >= 2
    assert report.layout_problems == {1280: 0, 390: 0}


@needs_chromium
@pytest.mark.parametrize(
    "body, expected",
    [
        # a verdict line scrolling sideways at 1280 px (the theme's default for output)
        (f'<div class="cell_output"><pre style="white-space: pre; overflow-x: auto">{LONG}</pre></div>',
         "at 1280 px: pre «✓ claim.a — random layers vs F.conv2d"),
        # inline maths cut off by overflow: hidden (the theme's span.math)
        (f'<p><span class="math" style="display: inline-flex; max-width: 100%; overflow: hidden">'
         f'<span style="white-space: nowrap">{LONG}</span></span></p>', "is cut off"),
        # a block that widens the page on a phone
        ('<p><span style="display: inline-block; width: 600px">wide</span></p>',
         "at 390 px: the page is"),
    ],
)
def test_layout_reports_what_a_reader_cannot_read_whole(tmp_path, body, expected):
    report = browser_check.check_book(_layout_site(tmp_path, body), search_term=None)
    assert any(expected in p and ("cut off" in p or "scrolling" in p or "page is" in p) for p in report.problems), report.problems


@needs_chromium
def test_layout_display_maths_may_scroll_in_its_box_on_a_phone_only(tmp_path):
    body = '<div class="math" style="overflow-x: auto"><span style="display: inline-block; width: 600px">x</span></div>'
    report = browser_check.check_book(_layout_site(tmp_path, body), search_term=None)
    report.problems = [p for p in report.problems if "MathJax did not load" not in p]  # no MathJax on this page
    assert report.layout_problems[390] == 0, report.problems
    assert report.layout_problems[1280] == 0  # 600 px fits the 700 px column
    report = browser_check.check_book(_layout_site(tmp_path / "narrow", body, width=500), search_term=None)
    assert report.layout_problems[1280] == 1
    assert any("at 1280 px: div.math «x» needs sideways scrolling" in p for p in report.problems), report.problems


@needs_chromium
def test_browser_fails_a_claim_link_that_hides_the_id(tmp_path):
    root = _site(tmp_path, {
        "index.html": _page('<a href="ch/one.html#claim.a">Proposition 1.1</a> <a href="ch/one.html#claim.b">claim.b</a>'),
        "ch/one.html": _page('<div class="proof" id="claim.a">A</div><div class="proof" id="claim.b">B</div>'
                             '<a class="headerlink" href="#claim.a">#</a>'),
    })
    report = browser_check.check_book(root, search_term=None)
    assert report.claim_links == 2
    assert report.problems == ["index.html: the link to claim claim.a reads «Proposition 1.1», not the claim id"]


# --------------------------------------------------------------------------- the book speaks to its reader


@pytest.mark.parametrize(
    "text, hit",
    [
        ("The issue behind this chapter asks for more.", "The issue behind"),
        ("As the audit found, the fold is exact.", "audit"),
        ("Fixed in the last session.", "session"),
        ("TODO: a figure.", "TODO"),
        ("See issues #12 and #13.", "issues"),
    ],
)
def test_process_language_is_reported(tmp_path, text, hit):
    root = _site(tmp_path, {"index.html": _page(f"<p>{text}</p>"), "ch/one.html": _page("<p>Folding is exact.</p>")})
    pages, found = linkcheck.check_process_language(root)
    assert pages == 2 and len(found) == 1 and found[0].page == "index.html" and f"'{hit}'" in found[0].why


def test_process_language_ignores_scripts_and_other_words(tmp_path):
    body = ("<p>A tissue of sessional todo audio: no hit (whole words only); 'todo' in lower case is a word.</p>"
            "<script>const issue = 'session';</script><style>.audit { }</style>")
    _, found = linkcheck.check_process_language(_site(tmp_path, {"index.html": _page(body)}))
    assert found == []


def test_claims_index_titles_are_plain_text():
    """An index entry is not typeset by MathJax: a title's TeX becomes plain text ($ left in it would show raw)."""
    assert convbook_claims.plain_title(r"The effective receptive field grows as $\sqrt{L}$") == (
        "The effective receptive field grows as √L")
    assert convbook_claims.plain_title(r"Option A is a $1\times1$ max pool") == "Option A is a 1×1 max pool"
    assert "$" not in convbook_claims.plain_title(r"any $\varepsilon > 0$, $C_\text{in}$ and $\lceil H/s\rceil$")


# --------------------------------------------------------------------------- the book's own styles keep evidence whole

# The theme's rules that cut evidence off (pydata-sphinx-theme): inline and display maths clip, output scrolls.
THEME_CSS = ("<style>div.math,span.math{align-items:center;display:flex;max-width:100%;overflow:hidden}"
             "span.math{align-items:baseline;display:inline-flex} pre{overflow:auto;white-space:pre}"
             "div.math mjx-container{flex-grow:1;overflow:auto} .admonition{overflow:hidden}</style>")
WIDE_TEX = r"\sum_m\sum_a V[o,m,a]\sum_i\sum_b H[m,i,b]\,x_i[u+a-\lfloor n/2\rfloor,\,v+b-\lfloor n/2\rfloor]" * 2


def _styled_site(tmp_path: Path, with_book_styles: bool) -> Path:
    head = MATHJAX_HEAD + THEME_CSS
    if with_book_styles:
        head += '<link rel="stylesheet" href="_static/convbook.css"><script src="_static/convbook.js"></script>'
    verdict = "✓ bn.fold-conv — random layers (groups, stride, dilation, padding modes), float64, 500 layers, max rel. error 4.1e-16 (tol 1e-12)"
    body = ARTICLE.format(w=688, body=(
        f'<div class="cell_output"><div class="output"><pre>{verdict}</pre></div></div>'
        f'<div class="admonition"><p>Inline <span class="math">\\({WIDE_TEX[:60]}\\)</span> in a claim.</p></div>'
        f'<div class="math">\\[{WIDE_TEX[: len(WIDE_TEX) // 2]}\\]</div>'))
    root = _site(tmp_path, {"index.html": _page(body, '<meta name="viewport" content="width=device-width">' + head)})
    (root / "_static").mkdir()
    (root / "_static" / "mathjax").symlink_to(_mathjax_dir(), target_is_directory=True)
    for name in ("convbook.css", "convbook.js"):
        (root / "_static" / name).write_text((ROOT / "book" / "_static" / name).read_text(encoding="utf-8"), encoding="utf-8")
    return root


@needs_chromium
def test_book_styles_keep_verdicts_and_formulas_whole(tmp_path):
    """Under the theme's rules alone a verdict line scrolls and formulas are cut off; with the book's
    convbook.css/js, nothing is clipped or scrolled at 1280 px and only the display formula scrolls at 390 px."""
    bare = browser_check.check_book(_styled_site(tmp_path / "bare", False), search_term=None)
    assert bare.layout_problems[1280] >= 2 and bare.layout_problems[390] >= 2, bare.problems
    styled = browser_check.check_book(_styled_site(tmp_path / "styled", True), search_term=None)
    assert styled.problems == [], styled.problems
    assert styled.formulas == 2
