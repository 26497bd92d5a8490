"""Tokens as a backend generates them, for progress inside a long model call.

A CPU batch of 24 answers of 96 tokens takes tens of seconds; counted per finished call, a
step's progress would stand still that long. `Context.call` sets a meter for the call, and
the transformers backend ticks it once per decoding step with the rows still generating.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_meter: ContextVar[Callable[[int], None] | None] = ContextVar("token_meter", default=None)


@contextmanager
def metering(callback: Callable[[int], None] | None) -> Iterator[None]:
    token = _meter.set(callback)
    try:
        yield
    finally:
        _meter.reset(token)


def tick(tokens: int) -> None:
    """`tokens` more generated (one decoding step of that many rows)."""
    callback = _meter.get()
    if callback is not None and tokens:
        callback(tokens)


def active() -> bool:
    return _meter.get() is not None
