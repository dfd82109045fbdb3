"""Waiting for the operator's stop: SIGINT (Ctrl-C) or SIGTERM, for the commands that run until
told otherwise (simulators, the demo)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

__all__ = ["STOP_SIGNALS", "wait_for_stop_signal"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def wait_for_stop_signal() -> None:
    """Return when SIGINT or SIGTERM arrives; the handlers are removed again afterwards."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
