"""The notebook safety net: nbval really compares, and tools/nb.py refuses stale notebooks."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "notebooks" / "01-convolution.ipynb"
SOURCE = ROOT / "notebooks" / "src" / "01-convolution.md"

sys.path.insert(0, str(ROOT / "tools"))
import nb as nbtool  # noqa: E402


def _nbval(path: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env",
         "--nbval-sanitize-with", str(ROOT / "tools" / "nbval-sanitize.cfg"), str(path), "-q", "-p", "no:cacheprovider",
         "-p", "no:xdist", "--rootdir", str(path.parent)],
        capture_output=True, text=True, cwd=path.parent, timeout=300,
    )


def _first_verdict_output(nb: dict) -> dict:
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and "".join(out["text"]).startswith("✓ conv."):
                return out
    raise AssertionError("no verdict output found in chapter 1")


@pytest.fixture()
def tampered_copy(tmp_path: pathlib.Path):
    def make(edit) -> pathlib.Path:
        nb = json.loads(CHAPTER.read_text(encoding="utf-8"))
        edit(nb)
        path = tmp_path / "tampered.ipynb"
        path.write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
        return path

    return make


def test_nbval_fails_when_a_stored_verdict_changes(tampered_copy):
    def flip_mark(nb):
        out = _first_verdict_output(nb)
        text = "".join(out["text"])
        out["text"] = [text.replace("✓", "✗", 1)]

    result = _nbval(tampered_copy(flip_mark))
    assert result.returncode != 0, result.stdout[-2000:]
    assert "failed" in result.stdout


def test_nbval_fails_when_a_stored_case_count_changes(tampered_copy):
    def change_count(nb):
        out = _first_verdict_output(nb)
        text = "".join(out["text"])
        out["text"] = [text.replace(" cases", "0 cases", 1)]

    result = _nbval(tampered_copy(change_count))
    assert result.returncode != 0, result.stdout[-2000:]


def test_nb_check_reports_out_of_sync_and_unexecuted(tmp_path, monkeypatch):
    src_dir = tmp_path / "notebooks" / "src"
    src_dir.mkdir(parents=True)
    (tmp_path / "book").mkdir()
    shutil.copy(SOURCE, src_dir / SOURCE.name)
    nb = json.loads(CHAPTER.read_text(encoding="utf-8"))
    nb["cells"][1]["source"] = "print('edited')"
    nb["cells"][1]["execution_count"] = None
    (tmp_path / "notebooks" / CHAPTER.name).write_text(json.dumps(nb), encoding="utf-8")
    monkeypatch.setattr(nbtool, "ROOT", tmp_path)
    monkeypatch.setattr(nbtool, "SOURCE_DIRS", [src_dir, tmp_path / "book" / "src"])
    assert nbtool.check() == 1


def test_nb_check_passes_on_the_committed_notebooks():
    assert nbtool.check() == 0
