"""Output-size arithmetic of convolutions (chapter 2 extends this module).

The one formula everything else in the book leans on:

    n_out = floor((n + 2p - d(k - 1) - 1) / s) + 1

for input size ``n``, kernel ``k``, stride ``s``, padding ``p`` (each side), dilation ``d``.
"""

from __future__ import annotations

__all__ = ["conv_output_size"]


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution along one axis (PyTorch semantics).

    ``floor((size + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1``

    Rules (each raises ``ValueError`` naming it): size, kernel_size, stride, dilation ≥ 1;
    padding ≥ 0; the dilated kernel ``dilation*(kernel_size-1)+1`` must fit in the padded
    input ``size + 2*padding`` (otherwise the output would be empty).
    """
    for name, value, low in (("size", size, 1), ("kernel_size", kernel_size, 1), ("stride", stride, 1),
                             ("padding", padding, 0), ("dilation", dilation, 1)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    effective = dilation * (kernel_size - 1) + 1
    if effective > size + 2 * padding:
        raise ValueError(
            f"dilated kernel larger than padded input: dilation*(kernel_size-1)+1 = {effective} > "
            f"size + 2*padding = {size + 2 * padding}"
        )
    return (size + 2 * padding - effective) // stride + 1
