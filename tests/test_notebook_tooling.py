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


def test_nb_check_reports_out_of_sync_and_unexecuted(tmp_path, monkeypatch, capsys):
    src_dir = tmp_path / "notebooks" / "src"
    src_dir.mkdir(parents=True)
    (tmp_path / "book").mkdir()
    shutil.copy(SOURCE, src_dir / SOURCE.name)
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")  # the install cell names the repository it sets
    nb = json.loads(CHAPTER.read_text(encoding="utf-8"))
    nb["cells"][1]["source"] = "print('edited')"
    nb["cells"][1]["execution_count"] = None
    (tmp_path / "notebooks" / CHAPTER.name).write_text(json.dumps(nb), encoding="utf-8")
    monkeypatch.setattr(nbtool, "ROOT", tmp_path)
    monkeypatch.setattr(nbtool, "SOURCE_DIRS", [src_dir, tmp_path / "book" / "src"])
    assert nbtool.check() == 1
    assert "out of sync" in capsys.readouterr().out


def test_nb_check_passes_on_the_committed_notebooks():
    assert nbtool.check() == 0


# --------------------------------------------------------------------------- the ledger table (convbook.ledger)


def test_ledger_table_links_every_claim_and_keeps_the_error_maskable(tmp_path):
    import re

    from convbook.claims import Verdict
    from convbook.ledger import claim_pages, ledger_table

    pages = claim_pages(ROOT / "notebooks" / "src")
    assert pages["conv.matrix"] == "../notebooks/01-convolution.html"
    ok = Verdict("conv.matrix", True, "dense matrix vs F.conv2d", 12, "layers", max_error=4.1e-16, tolerance=1e-12)
    bad = Verdict("conv.cross-correlation", False, "exhaustive", 7, mismatches=2)
    table = ledger_table([ok, bad], pages)
    assert '<a class="claim-ref reference internal" href="../notebooks/01-convolution.html#conv.matrix">' in table
    assert "12 layers" in table and "✓" in table and "✗" in table and "2 mismatches" in table
    # the full statement, not a truncated one
    from convbook.claims import get_claim

    assert get_claim("conv.matrix").statement.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")[:200] in table
    # the nbval sanitizer masks the measured error and keeps the tolerance
    cfg = (ROOT / "tools" / "nbval-sanitize.cfg").read_text(encoding="utf-8")
    pattern = re.search(r"\[ledger-error\]\nregex: (.+)\nreplace: (.+)", cfg)
    masked = re.sub(pattern.group(1), pattern.group(2), table)
    assert "4.1e-16" not in masked and "<measured> ≤ 1e-12" in masked


def test_ledger_provenance_names_date_and_commit(tmp_path):
    from datetime import datetime, timezone

    from convbook.ledger import provenance

    when = datetime(2026, 12, 1, 21, 40, tzinfo=timezone.utc)
    text = provenance(ROOT, now=when)
    assert text.startswith("2026-12-01 21:40 UTC, commit ") and len(text.split("commit ")[1].split()[0]) == 12
    assert provenance(tmp_path, now=when) == "2026-12-01 21:40 UTC, outside a git checkout"
