"""Limits on one simulated BFCL call and on one multi-turn item's calls.

A model's answer chooses the arguments of BFCL's simulated APIs, and some of them set how much
arithmetic a call does: ``MathAPI.square_root``'s ``precision`` becomes ``decimal``'s precision,
``logarithm``'s becomes ``mpmath.mp.dps``, and ``power`` is ``base**exponent``. At a precision of
10**6 one such call ran 10 to 37 s inside single C-level operations that no ``SIGALRM`` can
interrupt. So the arguments that drive that cost are bounded before the call (``cost_refusal``),
far above anything BFCL's items use (their largest precision is 10), and the alarm stays for
Python-level loops. Each call runs in a fresh ``decimal`` context and with ``mpmath``'s
precision put back afterwards, so one call's settings never leak into the next. An item's calls
share a budget of seconds spent inside them (``item_budget``; the model's own generation does not
count): when it is spent, ``ItemOutOfTime`` ends the item, which is then counted wrong.
"""

from __future__ import annotations

import contextlib
import decimal
import inspect
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

#: Largest ``precision`` (decimal digits) a simulated call may ask for; 1000 digits take
#: milliseconds (``decimal`` square root, ``mpmath`` logarithm), 10**5 took 0.7 and 7 s.
MAX_PRECISION = 1000
#: Largest integer power (bits of ``base**exponent``) a call may compute: ~10**5 digits, ~0.1 s.
MAX_POWER_BITS = 2**19
#: Wall-clock seconds all simulated calls of one item (its conversation, or its judging) may
#: take together; an item's calls ordinarily take milliseconds.
ITEM_SECONDS = 60.0

#: ``[seconds allowed, seconds spent]`` of the running item; ``None`` outside any item
_budget: list[float] | None = None


class ItemOutOfTime(RuntimeError):
    """One item's simulated calls used up ``ITEM_SECONDS``: the item is counted wrong."""


@contextlib.contextmanager
def item_budget(seconds: float | None = None) -> Iterator[None]:
    """Give the calls made inside the block (``spending``) ``seconds`` in all (default
    ``ITEM_SECONDS``)."""
    global _budget
    previous = _budget
    _budget = [ITEM_SECONDS if seconds is None else seconds, 0.0]
    try:
        yield
    finally:
        _budget = previous


@contextlib.contextmanager
def spending() -> Iterator[None]:
    """Charge the time the block takes to the running item's budget."""
    start = time.monotonic()
    try:
        yield
    finally:
        if _budget is not None:
            _budget[1] += time.monotonic() - start


def seconds_left() -> float | None:
    """What the running item's budget has left (``None``: no budget is running)."""
    return None if _budget is None else _budget[0] - _budget[1]


def check_budget() -> None:
    """Raise ``ItemOutOfTime`` when the current item's budget is spent."""
    left = seconds_left()
    if left is not None and left <= 0:
        raise ItemOutOfTime(f"the item's simulated calls took over {_budget[0]:g} s in all")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def cost_refusal(method: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """Why calling ``method`` with these arguments would cost too much, or ``None``.

    Arguments are matched to the method's parameters by name (positional ones too), so
    ``square_root(2, 10**6)`` is refused as ``square_root(number=2, precision=10**6)`` is.
    """
    try:
        bound = inspect.signature(method).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return None  # the call itself will fail with Python's own message
    precision = bound.get("precision")
    if _is_int(precision) and abs(precision) > MAX_PRECISION:
        return f"precision {precision} over {MAX_PRECISION} refused"
    base, exponent = bound.get("base"), bound.get("exponent")
    bits = exponent * abs(base).bit_length() if _is_int(base) and _is_int(exponent) else 0
    if bits > MAX_POWER_BITS:
        return f"power of {bits} bits over {MAX_POWER_BITS} refused"
    return None


@contextlib.contextmanager
def numeric_contexts() -> Iterator[None]:
    """Run the block in a fresh ``decimal`` context and restore ``mpmath``'s precision after."""
    mpmath = sys.modules.get("mpmath")
    saved = mpmath.mp.prec if mpmath is not None else None
    try:
        with decimal.localcontext():
            yield
    finally:
        mpmath = sys.modules.get("mpmath")
        if mpmath is not None:
            if saved is None:
                mpmath.mp.dps = 15  # mpmath's own default, for a first import inside the call
            else:
                mpmath.mp.prec = saved
