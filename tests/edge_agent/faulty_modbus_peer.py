"""A raw asyncio Modbus TCP peer on 127.0.0.1 that answers correctly or in a chosen faulty way.

::

    peer = ModbusPeer(Behaviour.COUNTER)
    port = await peer.start()
    peer.behaviour = Behaviour.EXCEPTION_BUSY   # switch at any time
    await peer.stop()

pymodbus' server cannot produce most of these faults, so this one speaks MBAP by hand:

* ``COUNTER``: a correct answer to function 3/4; every request that covers register 0 serves
  the next value of a counter (1, 2, 3 ...) as a big-endian uint32 in registers 0-1, other
  registers hold 0. :attr:`ModbusPeer.served` is the last value served.
* ``GARBAGE``: random bytes that are not a Modbus frame.
* ``WRONG_COUNT`` / ``EXTRA_COUNT``: a well-formed frame with one register fewer / more than
  asked for.
* ``EXCEPTION_ADDRESS`` / ``EXCEPTION_BUSY``: exception response 2 / 6.
* ``TRUNCATED``: the first half of a correct answer, then nothing.
* ``SILENT``: reads the request, never answers.
* ``HANG_UP``: closes the connection on every request.
* ``SCRIPTED``: the PDU of :attr:`ModbusPeer.script` in a correct MBAP header (the request's
  transaction and unit id), whatever was asked; the fuzz tests set it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from enum import Enum

__all__ = ["Behaviour", "ModbusPeer"]

_MBAP = struct.Struct(">HHHB")  # transaction id, protocol id, length, unit id


class Behaviour(Enum):
    COUNTER = "counter"
    GARBAGE = "garbage"
    WRONG_COUNT = "wrong_count"
    EXTRA_COUNT = "extra_count"
    EXCEPTION_ADDRESS = "exception_2"
    EXCEPTION_BUSY = "exception_6"
    TRUNCATED = "truncated"
    SILENT = "silent"
    HANG_UP = "hang_up"
    SCRIPTED = "scripted"


class ModbusPeer:
    """One TCP listener on 127.0.0.1; ``behaviour`` decides every answer (see module doc)."""

    def __init__(self, behaviour: Behaviour = Behaviour.COUNTER, *, seed: int = 0) -> None:
        self.behaviour = behaviour
        self.served = 0
        self.requests = 0
        self.script = b""
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, port: int = 0) -> int:
        """Listen (on ``port``, 0: any free one, or the previous one after a stop)."""
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", port or self.port, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._clients):
            task.cancel()
        for task in list(self._clients):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                header = await reader.readexactly(_MBAP.size)
                tid, _proto, length, unit = _MBAP.unpack(header)
                pdu = await reader.readexactly(max(length - 1, 0))
                self.requests += 1
                if self.behaviour is Behaviour.HANG_UP:
                    return
                answer = self._answer(tid, unit, pdu)
                if answer:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, tid: int, unit: int, pdu: bytes) -> bytes:
        function = pdu[0] if pdu else 0
        behaviour = self.behaviour
        if behaviour is Behaviour.SILENT:
            return b""
        if behaviour is Behaviour.SCRIPTED:
            return _frame(tid, unit, self.script)
        if behaviour is Behaviour.GARBAGE:
            return bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(3, 40)))
        if behaviour in (Behaviour.EXCEPTION_ADDRESS, Behaviour.EXCEPTION_BUSY):
            code = 2 if behaviour is Behaviour.EXCEPTION_ADDRESS else 6
            return _frame(tid, unit, bytes([function | 0x80, code]))
        if function not in (3, 4) or len(pdu) < 5:
            return _frame(tid, unit, bytes([function | 0x80, 1]))  # illegal function
        address, count = struct.unpack(">HH", pdu[1:5])
        registers = [0] * count
        if address == 0:
            self.served += 1
            value = self.served & 0xFFFFFFFF
            head = [value >> 16, value & 0xFFFF]
            registers[: min(2, count)] = head[: min(2, count)]
        if behaviour is Behaviour.WRONG_COUNT:
            registers = registers[:-1]
        elif behaviour is Behaviour.EXTRA_COUNT:
            registers = [*registers, 0xBEEF]
        body = struct.pack(f">BB{len(registers)}H", function, 2 * len(registers), *registers)
        frame = _frame(tid, unit, body)
        if behaviour is Behaviour.TRUNCATED:
            return frame[: len(frame) // 2]
        return frame


def _frame(tid: int, unit: int, pdu: bytes) -> bytes:
    return _MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu
