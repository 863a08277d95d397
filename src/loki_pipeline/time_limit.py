"""A wall-clock limit on a block of Python code (``SIGALRM``), for work a hostile input can
make endless: a chat template that loops, a simulated API call. It interrupts Python code, not
one long C operation, and works in the main thread on POSIX only; elsewhere the block runs
unlimited (``limit_holds`` says which), so callers that must also hold elsewhere bound their
inputs too."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


def limit_holds() -> bool:
    """Whether ``time_limit`` can interrupt code here (main thread, ``setitimer`` exists)."""
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")


@contextlib.contextmanager
def time_limit(seconds: float, message: str) -> Iterator[None]:
    """Raise ``TimeoutError(message)`` in the block once ``seconds`` have passed."""
    if not limit_holds():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
