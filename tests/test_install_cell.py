"""The chapters' first code cell installs the library on Colab, and is a no-op where it imports (offline)."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import nbformat
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import nb as nbtool  # noqa: E402

CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb"))


def test_the_url_is_the_one_set_in_config():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    url, branch = config["repository"]["url"], config["repository"].get("branch", "main")
    assert f"git+{url}@{branch}" in nbtool.install_cell_source()


def test_no_op_where_convbook_imports(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    assert importlib.util.find_spec("convbook") is not None
    exec(compile(nbtool.install_cell_source(), "install-cell", "exec"), {})
    assert calls == []


def test_installs_from_the_repository_where_convbook_is_missing(monkeypatch):
    calls = []
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "convbook" else real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **k: calls.append((cmd, k)))
    exec(compile(nbtool.install_cell_source(), "install-cell", "exec"), {})
    assert len(calls) == 1
    cmd, kwargs = calls[0]
    url, branch = nbtool.repository()
    assert cmd[:3] == [sys.executable, "-m", "pip"] and "install" in cmd and "--no-deps" in cmd
    assert cmd[-1] == f"git+{url}@{branch}"
    assert kwargs.get("check") is True


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_starts_with_the_install_cell(path):
    nb = nbformat.read(path, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code.source == nbtool.install_cell_source()
    assert nbtool.INSTALL_TAG in first_code.metadata.get("tags", [])
    assert first_code.get("outputs") == []
