"""Small shared helpers for the checks: seeded generators, float64 tensors, tuples.

Every check draws its random cases from its *own* seeded generator, so a verdict does not
depend on what ran before it (a notebook cell, another claim, a test).
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["DTYPE", "generator", "randn", "randint", "as_tuple", "check_device"]

#: The dtype every exactness check runs in.
DTYPE = torch.float64


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (CPU so draws are identical on every device)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


def randn(*shape: int, gen: torch.Generator, device: str = "cpu", dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """Standard normal tensor drawn on the CPU from ``gen``, then moved to ``device``."""
    return torch.randn(*shape, generator=gen, dtype=dtype).to(device)


def randint(low: int, high: int, gen: torch.Generator) -> int:
    """One integer uniform in ``[low, high]`` (both ends included)."""
    if high < low:
        raise ValueError(f"randint needs low <= high, got [{low}, {high}]")
    return int(torch.randint(low, high + 1, (1,), generator=gen).item())


def as_tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """``value`` as an ``n``-tuple of ints; an int is repeated. Raises ``ValueError`` on a wrong length.

    The rules of :func:`convbook.conventions.as_tuple`: numpy integers and 0-d integer tensors
    count as ints; floats, bools and strings are refused."""
    from .conventions import as_tuple as _as_tuple

    return _as_tuple(value, n, name)


def check_device(device: str) -> str:
    """Validate a device name for the numerical checks ('cpu', 'cuda', 'cuda:N')."""
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch.cuda.is_available() is False")
        return device
    raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
