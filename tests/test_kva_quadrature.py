"""Quadrature rules against integrals known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.kva.quadrature import QUADRATURES, quadrature_rule


def integrate(name: str, steps: int, f) -> float:
    alphas, weights = quadrature_rule(name, steps)
    return float(np.sum(weights * f(alphas)))


@pytest.mark.parametrize("name", QUADRATURES)
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_every_rule_integrates_constants_exactly_on_unit_interval(name, steps):
    alphas, weights = quadrature_rule(name, steps)
    assert np.all((alphas >= 0) & (alphas <= 1))
    assert integrate(name, steps, lambda a: np.full_like(a, 3.0)) == pytest.approx(3.0, abs=1e-12)


def test_left_rule_is_the_papers_k_over_m():
    alphas, weights = quadrature_rule("left", 7)
    np.testing.assert_allclose(alphas, [k / 7 for k in range(7)])
    np.testing.assert_allclose(weights, 1 / 7)


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_left_and_right_riemann_sums_of_linear_function_have_known_error(steps):
    # ∫_0^1 a da = 1/2; left sum = (m-1)/(2m), right sum = (m+1)/(2m).
    assert integrate("left", steps, lambda a: a) == pytest.approx((steps - 1) / (2 * steps))
    assert integrate("right", steps, lambda a: a) == pytest.approx((steps + 1) / (2 * steps))


@pytest.mark.parametrize("name", ["midpoint", "trapezoid"])
def test_midpoint_and_trapezoid_are_exact_for_linear_functions(name):
    assert integrate(name, 3, lambda a: 4 * a - 1) == pytest.approx(1.0, abs=1e-12)


def test_midpoint_and_trapezoid_errors_on_quadratic_match_theory():
    # ∫ a² = 1/3; with h = 1/m and f'' = 2: midpoint = 1/3 - h²/12, trapezoid = 1/3 + h²/6.
    for m in (2, 5):
        assert integrate("midpoint", m, lambda a: a**2) == pytest.approx(1 / 3 - 1 / (12 * m * m))
        assert integrate("trapezoid", m, lambda a: a**2) == pytest.approx(1 / 3 + 1 / (6 * m * m))


@pytest.mark.parametrize("steps", [1, 2, 4, 7])
def test_gauss_legendre_is_exact_up_to_degree_2m_minus_1(steps):
    degree = 2 * steps - 1
    assert integrate("gauss_legendre", steps, lambda a: a**degree) == pytest.approx(
        1 / (degree + 1), rel=1e-12
    )
    # ... and not beyond (the rule really has m points).
    high = 2 * steps
    assert abs(integrate("gauss_legendre", steps, lambda a: a**high) - 1 / (high + 1)) > 1e-10


@pytest.mark.parametrize("name", QUADRATURES)
def test_every_rule_converges_on_exp(name):
    exact = math.e - 1
    errors = [abs(integrate(name, m, np.exp) - exact) for m in (4, 16, 64)]
    assert errors[0] > errors[1] > errors[2] or errors[2] < 1e-12
    assert errors[2] < 2e-2


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_steps_below_one_or_not_integer_is_rejected(steps):
    with pytest.raises(LokiInputError, match="steps"):
        quadrature_rule("left", steps)


def test_unknown_quadrature_is_rejected():
    with pytest.raises(LokiInputError, match="simpson"):
        quadrature_rule("simpson", 7)
