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
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'>{head}</head><body>{body}</body></html>"


def _site(tmp_path: Path, pages: dict[str, str]) -> Path:
    root = tmp_path / "html"
    (root / "_images").mkdir(parents=True)
    (root / "_images" / "dot.png").write_bytes(PNG)
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
