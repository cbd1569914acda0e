"""The claim registry, verdicts, the CLI, and the rule that every check can fail."""

from __future__ import annotations

import configparser
import importlib
import json
import math
import pathlib
import pkgutil
import re

import numpy as np
import pytest

import tests
from convbook import claims as claims_mod
from convbook.__main__ import main
from convbook.claims import ID_PATTERN, Claim, Tally, Verdict, all_claims, format_ledger, get_claim

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALL = all_claims()


def test_registry_is_not_empty_and_ids_are_well_formed():
    assert len(ALL) >= 5
    ids = [c.id for c in ALL]
    assert len(ids) == len(set(ids))
    for c in ALL:
        assert re.match(ID_PATTERN, c.id), c.id
        assert c.title and c.statement and c.chapter >= 1


@pytest.mark.parametrize("c", ALL, ids=[c.id for c in ALL])
def test_every_claim_passes(c: Claim):
    verdict = c.run()
    assert verdict.passed, str(verdict)
    assert verdict.claim_id == c.id
    assert verdict.cases > 0


def _all_plants() -> list:
    plants = []
    for info in pkgutil.iter_modules(tests.__path__):
        if info.name.startswith("test_"):
            module = importlib.import_module(f"tests.{info.name}")
            plants += list(getattr(module, "PLANTS", []))
    return plants


def test_every_claim_has_a_planted_failure_test():
    planted = {p.claim_id for p in _all_plants()}
    missing = sorted({c.id for c in ALL} - planted)
    assert not missing, f"claims without a planted-failure test: {missing}"


def test_every_named_parameter_has_its_own_plant():
    """One plant per parameter a statement quantifies over: a check that ignores eps, or uses
    axis 0's sizes on every axis, must turn red."""
    covered = {(p.claim_id, p.parameter) for p in _all_plants() if p.parameter is not None}
    missing = [f"{c.id}:{name}" for c in ALL for name in c.parameters if (c.id, name) not in covered]
    assert not missing, f"named parameters without a plant that ignores them: {missing}"


def test_aliases_resolve_and_point_to_registered_claims():
    for old, (new, why) in claims_mod.aliases().items():
        assert old not in {c.id for c in ALL}, old
        assert get_claim(old).id == new, (old, new)
        assert why


def test_published_claim_ids_are_stable():
    lines = (ROOT / "tests" / "published_claim_ids.txt").read_text(encoding="utf-8").splitlines()
    published = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    registered = {c.id for c in ALL} | set(claims_mod.aliases())
    assert not published - registered, f"published claim ids removed or renamed: {sorted(published - registered)}"
    assert not registered - published, f"new claim ids: add them to tests/published_claim_ids.txt: {sorted(registered - published)}"


# --- Tally: a check that tries nothing, or errs, cannot pass -----------------------------


def test_tally_without_cases_fails():
    v = Tally(tol=1e-12).verdict("nothing")
    assert not v.passed and v.cases == 0
    assert any("no case" in n for n in v.notes)


def test_tally_close_within_and_beyond_tolerance():
    t = Tally(tol=1e-12)
    t.close(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-15]))
    assert t.passed
    t.close(np.array([1.0]), np.array([1.0 + 1e-9]))
    assert not t.passed and t.max_error > 1e-12


def test_tally_shape_mismatch_and_nan_fail():
    t = Tally(tol=1.0)
    t.close(np.zeros(3), np.zeros(4))
    assert not t.passed and math.isinf(t.max_error)
    t2 = Tally(tol=1.0)
    t2.close(np.array([np.nan]), np.array([1.0]))
    assert not t2.passed


def test_tally_exact_mismatch_fails_and_records_first_failure():
    t = Tally()
    t.exact(True)
    t.exact(False, "2 != 3")
    v = t.verdict("grid")
    assert not v.passed and v.mismatches == 1
    assert any("2 != 3" in n for n in v.notes)


def test_tally_close_requires_tolerance():
    with pytest.raises(ValueError, match="tolerance"):
        Tally().close(np.zeros(1), np.zeros(1))


def test_tally_all_zero_reference_uses_the_absolute_error_and_says_so():
    # was: a 1e-16 difference from an all-zero reference divided by 1e-300 gave a relative error of 1e284
    t = Tally(tol=1e-12)
    assert t.close(np.array([1e-16, -2e-16]), np.zeros(2)) == pytest.approx(2e-16)
    v = t.verdict("zeros")
    assert v.passed and v.max_error == pytest.approx(2e-16)
    assert any("absolute error where the reference is zero" in n for n in v.notes)
    bad = Tally(tol=1e-12)
    bad.close(np.array([1e-6]), np.zeros(1))
    assert not bad.passed  # a real difference still fails
    plain = Tally(tol=1e-12)
    plain.close(np.array([2.0]), np.array([2.0]))
    plain.close(np.zeros(3), np.zeros(3))  # exactly zero against zero: zero either way, nothing to report
    assert plain.passed and not any("reference is zero" in n for n in plain.verdict("x").notes)


def test_absolute_error_kind():
    t = Tally(tol=1e-3, kind="abs.")
    t.close(np.array([1000.0]), np.array([1000.0005]))
    assert t.passed


# --- Verdict lines and the nbval sanitizer ------------------------------------------------


def _sanitize(text: str) -> str:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "tools" / "nbval-sanitize.cfg", encoding="utf-8")
    for section in cfg.sections():
        text = re.sub(cfg[section]["regex"], cfg[section]["replace"], text)
    return text


def test_verdict_line_format_and_sanitizer_keeps_the_verdict():
    v = Verdict("a.b", True, "random layers", 500, "layers", 3.3e-16, 1e-12, dtype="float64")
    line = v.line()
    assert line == "✓ a.b — random layers, float64, 500 layers, max rel. error 3.3e-16 (tol 1e-12)"
    masked = _sanitize(line)
    assert masked == "✓ a.b — random layers, float64, 500 layers, max rel. error <measured> (tol 1e-12)"
    failed = Verdict("a.b", False, "random layers", 500, "layers", 2.0e-3, 1e-12, dtype="float64")
    assert _sanitize(failed.line()) != masked  # the mark differs, so nbval sees the change


def test_ledger_sanitizer_masks_only_the_measured_error():
    text = "1   conv.x   40   4.8e-16 ≤ 1e-12; 0 mismatches  ✓"
    assert _sanitize(text) == "1   conv.x   40   <measured> ≤ 1e-12; 0 mismatches  ✓"


def test_format_ledger_lists_every_verdict():
    c = ALL[0]
    text = format_ledger([c.run()])
    assert c.id in text and "✓" in text


# --- Registration rules --------------------------------------------------------------------


def test_claim_rejects_bad_ids_and_duplicates():
    with pytest.raises(ValueError, match="pattern"):
        claims_mod.claim("NoDots", title="t", chapter=1, statement="s")
    with pytest.raises(ValueError, match="chapter"):
        claims_mod.claim("a.b", title="t", chapter=-1, statement="s")
    existing = ALL[0].id
    with pytest.raises(ValueError, match="registered twice"):
        claims_mod.claim(existing, title="t", chapter=1, statement="s")(lambda device="cpu": None)


def test_unknown_claim_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown claim id 'no.such-claim'"):
        get_claim("no.such-claim")


def test_check_must_return_a_verdict():
    bogus = Claim("x.y", "t", 1, "s", lambda device="cpu": True, "tests", 0)
    with pytest.raises(TypeError, match="not a Verdict"):
        bogus.run()


# --- Command line -----------------------------------------------------------------------------


def test_cli_verify_one_claim(capsys):
    cid = ALL[0].id
    assert main(["verify", "--claim", cid, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert cid in out and "1 passed, 0 failed" in out


def test_cli_verify_json(capsys):
    cid = ALL[0].id
    assert main(["verify", "--claim", cid, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdicts"][0]["claim_id"] == cid and data["verdicts"][0]["passed"] is True
    assert data["environment"]["device"] == "cpu"


def test_cli_verify_chapter_prints_progress(capsys):
    assert main(["verify", "--chapter", "1"]) == 0
    captured = capsys.readouterr()
    assert "[" in captured.err and "/" in captured.err  # progress lines on stderr
    assert all(c.id in captured.out for c in all_claims(chapter=1))


def test_cli_exit_status_is_1_when_a_claim_fails(monkeypatch, capsys):
    cid = ALL[0].id
    failing = Verdict("", False, "planted", 1, mismatches=1)
    original = get_claim(cid)
    monkeypatch.setitem(claims_mod._REGISTRY, cid, Claim(cid, original.title, original.chapter, original.statement,
                                                          lambda device="cpu": failing, "tests", original.order))
    assert main(["verify", "--claim", cid, "--quiet"]) == 1
    assert "0 passed, 1 failed" in capsys.readouterr().out


def test_cli_unknown_claim_and_bad_device(capsys):
    assert main(["verify", "--claim", "no.such-claim"]) == 2
    assert main(["verify", "--claim", ALL[0].id, "--device", "tpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "unknown claim id" in err and "device must be" in err


def test_cli_list(capsys):
    assert main(["list", "--statements"]) == 0
    out = capsys.readouterr().out
    assert all(c.id in out for c in ALL)


def test_readme_chapter_table_counts_the_registered_claims():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| (\d+|—) \|", text, flags=re.M)
    counted = {int(ch): (0 if n == "—" else int(n)) for ch, n in rows}
    registered: dict[int, int] = {}
    for c in ALL:
        registered[c.chapter] = registered.get(c.chapter, 0) + 1
    assert {ch: n for ch, n in counted.items() if n} == registered
    total = re.search(r"^(\d+) claims in all", text, flags=re.M)
    assert total and int(total.group(1)) == len(ALL)


def test_every_claim_names_its_independent_reference():
    missing = [c.id for c in ALL if not c.reference.strip()]
    assert not missing, f"claims without a reference (what their check compares against): {missing}"
