"""Shared test settings: deterministic hypothesis runs, float64 by default in comparisons."""

from hypothesis import HealthCheck, settings

# Deterministic, bounded property tests: the same examples on every machine and in CI.
settings.register_profile(
    "book",
    derandomize=True,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile("book")
