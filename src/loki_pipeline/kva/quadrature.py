"""Quadrature rules for the integrated-gradients integral over the scale ``alpha`` in [0, 1].

KVA approximates ``∫_0^1 ∂P(ŷ | z_l ← α z_l)/∂z_l dα`` by ``Σ_k w_k · g(α_k)``. Every backend
takes its ``(alphas, weights)`` from :func:`quadrature_rule`, so the rules are defined once:

- ``left``   (the paper's): ``α_k = k/m``,          ``w_k = 1/m``,  k = 0..m-1
- ``right``:                 ``α_k = (k+1)/m``,      ``w_k = 1/m``
- ``midpoint``:              ``α_k = (k+½)/m``,      ``w_k = 1/m``
- ``trapezoid``: ``m`` intervals, so ``m+1`` points ``α_k = k/m`` with ``w = 1/m`` inside and
  ``1/(2m)`` at both ends
- ``gauss_legendre``: the ``m``-point Gauss-Legendre rule mapped from [-1, 1] to [0, 1]
  (exact for polynomials of degree ``2m-1``)
"""

from __future__ import annotations

import numpy as np

from loki_pipeline.errors import LokiInputError

#: Names accepted by ``quadrature=``; ``left`` is the paper's (left Riemann sum).
QUADRATURES: tuple[str, ...] = ("left", "right", "midpoint", "trapezoid", "gauss_legendre")


def check_steps(steps: int) -> int:
    """``steps`` must be a positive integer (the paper uses 7)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise LokiInputError(f"steps={steps!r}: expected an integer >= 1 (the paper uses 7)")
    return int(steps)


def check_quadrature(quadrature: str) -> str:
    if quadrature not in QUADRATURES:
        raise LokiInputError(f"quadrature={quadrature!r}: expected one of {', '.join(QUADRATURES)}")
    return quadrature


def quadrature_rule(quadrature: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` (float64) with ``Σ_k w_k f(α_k) ≈ ∫_0^1 f(α) dα``."""
    quadrature = check_quadrature(quadrature)
    m = check_steps(steps)
    k = np.arange(m, dtype=np.float64)
    if quadrature == "left":
        alphas, weights = k / m, np.full(m, 1.0 / m)
    elif quadrature == "right":
        alphas, weights = (k + 1) / m, np.full(m, 1.0 / m)
    elif quadrature == "midpoint":
        alphas, weights = (k + 0.5) / m, np.full(m, 1.0 / m)
    elif quadrature == "trapezoid":
        alphas = np.arange(m + 1, dtype=np.float64) / m
        weights = np.full(m + 1, 1.0 / m)
        weights[[0, -1]] /= 2
    else:  # gauss_legendre
        nodes, w = np.polynomial.legendre.leggauss(m)
        alphas, weights = (nodes + 1) / 2, w / 2
    return alphas, weights
