"""Planted failures: every claim's check must fail when its formula or transform is wrong.

A test module lists its plants in a module-level ``PLANTS`` list and exposes
``test_planted_failure = planted_failure_test(PLANTS)``. Each plant replaces attributes
(``"module:attribute"``) with a deliberately wrong version, runs the claim's check and
asserts that the verdict is a failure. ``tests/test_claims.py`` asserts that every
registered claim has at least one plant somewhere in the test suite, and one plant for each
parameter its statement names (``Claim.parameters``, matched by ``Plant.parameter``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from convbook.claims import get_claim


@dataclass(frozen=True)
class Plant:
    claim_id: str
    why: str
    replacements: dict[str, Any] = field(default_factory=dict)
    """``{"convbook.conv:flip_kernel": wrong_fn, ...}``"""
    parameter: str | None = None
    """The statement's parameter this plant ignores or gets wrong (one of the claim's
    ``parameters``); ``tests/test_claims.py`` requires one plant for each named parameter."""


def _apply(monkeypatch: pytest.MonkeyPatch, replacements: dict[str, Any]) -> None:
    for target, value in replacements.items():
        module_name, attr = target.split(":")
        module = importlib.import_module(module_name)
        if not hasattr(module, attr):
            raise AssertionError(f"plant target {target} does not exist")
        monkeypatch.setattr(module, attr, value)


def planted_failure_test(plants: list[Plant]) -> Callable:
    @pytest.mark.parametrize("plant", plants, ids=[f"{p.claim_id}:{p.why}" for p in plants])
    def test_planted_failure(plant: Plant, monkeypatch: pytest.MonkeyPatch) -> None:
        claim = get_claim(plant.claim_id)
        if plant.parameter is not None:
            assert plant.parameter in claim.parameters, (
                f"plant {plant.why!r} targets parameter {plant.parameter!r}, which claim {claim.id} does not name "
                f"(its parameters: {claim.parameters})")
        assert claim.run().passed, f"{plant.claim_id} must pass before planting"
        _apply(monkeypatch, plant.replacements)
        verdict = claim.run()
        assert not verdict.passed, f"{plant.claim_id} still passes with a planted error ({plant.why}): {verdict}"

    return test_planted_failure
