"""Releases: one version, everywhere a reader or a tool reads it, and the git tag that names it.

The book's version X.Y.Z is written in ``pyproject.toml`` (the package), ``convbook.__version__``,
``CITATION.cff`` (``version`` and the preferred citation's ``edition``) and on the "How to cite" page
(``vX.Y.Z`` in the text and ``edition = {X.Y.Z}`` in its BibTeX). A release is the git tag ``vX.Y.Z`` on the
commit that carries that version; ``.github/workflows/publish.yml`` runs this file with ``RELEASE_TAG`` set on
a tag push, and locally a tagged HEAD is checked the same way.

Also here: the Binder environment pins what the root requirements pin, and the publish workflow builds the
book with the README's command and deploys it to GitHub Pages.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def book_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def package_version() -> str:
    text = (ROOT / "lib" / "convbook" / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    assert m, "lib/convbook/__init__.py has no __version__ line"
    return m.group(1)


def versions_in_use() -> dict[str, str]:
    """Every place the version is written, and what it says there."""
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    cite = (ROOT / "book" / "how-to-cite.md").read_text(encoding="utf-8")
    found = {
        "pyproject.toml": book_version(),
        "convbook.__version__": package_version(),
        "CITATION.cff version": str(cff["version"]),
        "CITATION.cff edition": str(cff["preferred-citation"]["edition"]),
    }
    for i, v in enumerate(re.findall(r"edition\s*=\s*\{([^}]*)\}", cite)):
        found[f"how-to-cite BibTeX {i + 1}"] = v
    for i, v in enumerate(re.findall(r"\bv(\d+\.\d+\.\d+)\b", cite)):
        found[f"how-to-cite text v{i + 1}"] = v
    return found


def tag_problem(tag: str, version: str) -> str | None:
    """Why ``tag`` cannot be the release of ``version`` (None: it can)."""
    if not re.fullmatch(r"v\d+\.\d+\.\d+", tag):
        return f"release tags are vX.Y.Z; {tag!r} is not"
    if tag != f"v{version}":
        return f"tag {tag} does not name the book's version {version} (pyproject.toml, CITATION.cff, How to cite)"
    return None


def test_the_version_is_semantic():
    assert SEMVER.match(book_version()), book_version()


def test_every_place_states_the_same_version():
    found = versions_in_use()
    assert sum(k.startswith("how-to-cite BibTeX") for k in found) >= 2  # the book and a single claim
    assert any(k.startswith("how-to-cite text") for k in found)
    wrong = {k: v for k, v in found.items() if v != book_version()}
    assert not wrong, f"version {book_version()} (pyproject.toml) differs in {wrong}"


def test_tag_check():
    assert tag_problem("v0.1.0", "0.1.0") is None
    assert "does not name" in tag_problem("v0.2.0", "0.1.0")
    assert "vX.Y.Z" in tag_problem("0.1.0", "0.1.0")
    assert "vX.Y.Z" in tag_problem("v0.1", "0.1.0")


def _head_tags() -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "tag", "--points-at", "HEAD"], capture_output=True, text=True)
    except OSError:
        return []
    return [t for t in out.stdout.split() if t.startswith("v")] if out.returncode == 0 else []


def test_release_tag_names_the_version():
    """On a tag push RELEASE_TAG is the tag; locally, any v* tag on HEAD. Nothing to check otherwise."""
    tags = [os.environ["RELEASE_TAG"]] if os.environ.get("RELEASE_TAG") else _head_tags()
    if not tags:
        pytest.skip("not a release: no RELEASE_TAG and no v* tag on HEAD")
    problems = [p for t in tags if (p := tag_problem(t, book_version()))]
    assert not problems, problems


# --------------------------------------------------------------------------- Binder and publishing


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_binder_installs_the_cpu_torch_and_the_root_pins():
    binder = ROOT / "binder" / "requirements.txt"
    text = binder.read_text(encoding="utf-8")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text
    root, ours = _pins(ROOT / "requirements.txt"), _pins(binder)
    assert ours["torch"] == root["torch"].split("+")[0] + "+cpu"
    for name in ("numpy", "sympy", "matplotlib", "myst-nb", "triton"):
        assert ours.get(name) == root.get(name), f"binder pins {name}=={ours.get(name)}, requirements.txt {root.get(name)}"
    assert not any(n.startswith("nvidia") for n in ours), "Binder has no GPU"
    post = (ROOT / "binder" / "postBuild").read_text(encoding="utf-8")
    assert "pip install --no-deps -e ." in post and os.access(ROOT / "binder" / "postBuild", os.X_OK)


def test_launch_buttons_point_at_binder_and_colab():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    launch = cfg["launch_buttons"]
    assert launch["binderhub_url"] == "https://mybinder.org" and launch["colab_url"].startswith("https://colab.")
    assert cfg["repository"]["url"].startswith("https://github.com/")


def test_publish_workflow_builds_with_make_book_and_deploys_to_pages():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "publish.yml").read_text(encoding="utf-8"))
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert on["push"]["branches"] == ["main"] and on["push"]["tags"]
    build = wf["jobs"]["build"]["steps"]
    runs = [s.get("run", "") for s in build]
    uses = [s.get("uses", "") for s in build]
    assert "make book" in runs
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    artifact = next(s for s in build if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert artifact["with"]["path"] == "_build/html"
    tag_step = next(s for s in build if "tests/test_release.py" in s.get("run", ""))
    assert tag_step["if"].startswith("startsWith(github.ref, 'refs/tags/")
    assert tag_step["env"]["RELEASE_TAG"] == "${{ github.ref_name }}"
    deploy = wf["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["if"] == "github.ref == 'refs/heads/main'"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    # the README's build command is the one the workflow runs
    assert "make book" in (ROOT / "README.md").read_text(encoding="utf-8")
