"""The numbers behind `vsgen check`'s verdicts, each against an independent value:
the rounding bound of every dtype derived by hand, the Kolmogorov distribution's tail
against scipy's, and the printed comparisons."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from vsgen import verify


@pytest.mark.parametrize(
    ("dtype", "bound"),
    [
        # half an ulp of the dtype (2**-p, p significand bits with the hidden one),
        # plus float32 working precision; float64 alone: 2**-53
        (np.dtype("float64"), 2.0**-53),
        (np.dtype("float32"), 2.0**-24 + 2.0**-24),
        (np.dtype("float16"), 2.0**-11 + 2.0**-24),
        (np.dtype(ml_dtypes.bfloat16), 2.0**-8 + 2.0**-24),
    ],
)
def test_the_rounding_bound_of_each_dtype(dtype, bound):
    assert verify.rounding_error(dtype) == bound


@pytest.mark.parametrize("lam", [0.05, 0.3, 0.8, 1.0, 1.17, 1.19, 1.5, 2.5, 4.0])
def test_the_kolmogorov_tail_is_scipy_s(lam):
    stats = pytest.importorskip("scipy.stats")
    assert verify.kolmogorov_sf(lam) == pytest.approx(stats.kstwobign.sf(lam), rel=1e-9, abs=1e-300)


def test_the_kolmogorov_tail_at_and_below_zero():
    assert verify.kolmogorov_sf(0.0) == 1.0
    assert verify.kolmogorov_sf(-1.0) == 1.0


def test_comparisons_are_printed_with_the_side_that_holds():
    assert verify._compared(0.25, 0.5) == "0.25 <= 0.5"
    assert verify._compared(0.5, 0.25) == "0.5 > 0.25"
    # as many digits as it takes for the printed numbers to keep the relation
    assert verify._compared(1.0000001, 1.0) == "1.0000001 > 1"
    assert verify._compared(0.12345679, 0.12345678, 4) == "0.12345679 > 0.12345678"
    assert verify._compared(0.12345678, 0.12345679, 4) == "0.1235 <= 0.1235"  # holds as printed
