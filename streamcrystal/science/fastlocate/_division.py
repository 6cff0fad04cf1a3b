"""Division by a small odd integer, rounded exactly as ``x / d`` is, without a divide.

scipy's running means divide every total by the filter size. A vector division costs
several times a multiplication (on this project's AMD EPYC, two divisions per pixel were
a fifth of the bandpass), so the kernels divide with Markstein's correction step instead:

    q0 = x * r                  with r = 1 / d (rounded to nearest)
    e  = fma(-q0, d, x)         the remainder x - q0 d, computed exactly
    q  = fma(e, r, q0)          = x / d, rounded to nearest

Why ``q`` is the correctly rounded ``x / d`` for an odd integer ``3 <= d < 2**20`` and a
finite ``x = 0`` or ``|x| >= 2**-1000``:

* ``q0`` is within about two units in the last place (ulp) of ``z = x / d`` (two
  roundings), so ``x - q0 d`` is a multiple of ``ulp(z) / 2`` (``x`` is a multiple of
  ``2 ulp(z)``, ``q0`` of ``ulp(z) / 2``) below ``5 d`` of them in magnitude: it is
  representable, and the fused multiply-add returns it exactly.
* Then ``q0 + e r = z + (z - q0) (r d - 1)``: the exact value handed to the last rounding
  is within ``2**-105 |z|`` of ``z``.
* ``z`` itself is never that close to a rounding boundary (a midpoint ``m`` between two
  doubles: an odd 54-bit integer times ``ulp(z) / 2``, or ``ulp(z) / 4`` just below a power
  of two): ``x - d m`` is a nonzero multiple of that unit (``d m`` is an odd integer of at
  least 55 bits times it, ``x`` has 53 bits), so ``|z - m| >= ulp(z) / (4 d)``, far more
  than ``2**-105 |z|``. Hence ``q0 + e r`` and ``z`` round to the same double (and ties
  cannot happen).
* The bound on ``|x|`` keeps every quantity a normal double (no underflow); nothing
  overflows (``|q0| <= |x|``, the remainder is small).

Zero gives ``+0``, as ``0.0 / d`` does (running totals start at ``0.0``, so ``-0.0`` never
occurs). Non-finite ``x`` give NaN, where the division gives ``inf`` for ``x = inf``: the
kernels treat any non-finite pixel as a reason to hand the image to trackpy anyway.

``fma`` is LLVM's ``llvm.fma.f64`` intrinsic: a fused multiply-add by definition (one
rounding), compiled to the CPU's instruction where it has one, else to libm's ``fma``.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

__all__ = ["fma", "divide", "box_mean", "box_means", "TINY"]

#: The kernels check that no raw pixel is nonzero and below this in magnitude. Pixels of
#: 0 or at least ``2**-800`` are multiples of ``2**-852``; so are the running totals of
#: them (sums of multiples of a power of two round to multiples of it), and their means
#: are 0 or above ``2**-873``, multiples of ``2**-925``: every total divided is 0 or
#: above ``2**-925``, well inside the range where :func:`divide` is exact.
TINY = 2.0 ** -800


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` with a single rounding (LLVM's ``llvm.fma.f64``)."""
    signature = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return signature, codegen


@numba.njit(cache=True, nogil=True, inline="always")
def divide(x, divisor, reciprocal):
    """``x / divisor`` rounded to nearest, for ``reciprocal = 1.0 / divisor`` (see the module).

    Examples
    --------
    >>> divide(1.0, 15.0, 1.0 / 15.0) == 1.0 / 15.0
    True
    """
    quotient = x * reciprocal
    return fma(fma(-quotient, divisor, x), reciprocal, quotient)


@numba.njit(cache=True, nogil=True, inline="always")
def box_mean(total, divisor, reciprocal, truncate, exact_division):
    """A running total's mean ``total / divisor`` (``reciprocal = 1 / divisor``), cast like
    scipy's boxcar output (``truncate``: an integer image, whose means fit an int32).

    The division is :func:`divide` unless ``exact_division`` is given: a compile-time
    choice (``None`` or not), for raw images with pixels below :data:`TINY`.
    """
    mean = divide(total, divisor, reciprocal) if exact_division is None else total / divisor
    return np.float64(np.int32(mean)) if truncate else mean


@numba.njit(cache=True, nogil=True)
def box_means(totals, size, truncate, exact_division, out):
    """``out[x] = box_mean(totals[x], size, ...)``; two loops: the cast is decided once."""
    divisor = np.float64(size)
    reciprocal = 1.0 / divisor
    if truncate:
        for x in range(out.shape[0]):
            out[x] = box_mean(totals[x], divisor, reciprocal, True, exact_division)
    else:
        for x in range(out.shape[0]):
            out[x] = box_mean(totals[x], divisor, reciprocal, False, exact_division)
