"""The Modbus read planner: points in, as few read requests as the limits allow out. No I/O.

:func:`plan_reads` groups the points by (unit id, table), sorts them by PDU address and merges
neighbours into one request while

- the unused registers (or coils) read between two points stay at most ``max_gap``
  (``0``: never read an unmapped register), and
- the request spans at most ``max_registers`` registers (Modbus: 125) or ``max_coils`` coils
  (2,000).

The limits default to the binding's ``max_registers_per_read``, ``max_coils_per_read`` and
``max_gap``; pass them to override per device. Points that share a register (``bit``/``mask``
points on one status word) land in the same request. Merging is greedy from the lowest address,
which gives the fewest requests possible under these two rules (each request reaches at least
as far as any other plan's would). The result is deterministic: requests sorted by unit id,
table (read function 1..4) and address; each request's points sorted by offset, then index.

:func:`split_response` slices a response back into each point's registers (a bit response may
carry the padding up to a multiple of 8 that Modbus frames have), and :func:`decode_response`
runs the compiled codecs over them::

    requests = plan_reads(binding.points, binding)
    codecs = compile_binding(binding, model)
    for request in requests:
        registers = await client.read(request)              # the driver's business
        readings = decode_response(request, registers, codecs)  # {point index: Decoded}

Read-back after a write is ``plan_reads([point], binding)``: one request for that point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol_adapters.modbus.codec import MAX_REGISTERS, Decoded, PointCodec, pdu_address
from protocol_adapters.modbus.errors import ModbusCodecError, ModbusConfigError
from thing_models.model import ModbusBinding, ModbusPoint, ModbusTable, ModbusType

__all__ = [
    "MAX_COILS",
    "MAX_REGISTERS",
    "ReadRequest",
    "decode_response",
    "plan_reads",
    "split_response",
]

#: Most coils or discrete inputs one read may carry (functions 1 and 2).
MAX_COILS = 2000

_TABLE_ORDER = {table: table.read_function for table in ModbusTable}


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: ``count`` registers or bits of ``table`` from PDU ``address`` on ``unit_id``.

    ``points`` are ``(point_index, offset)`` pairs: the index into the planned sequence, and
    where the point's first register lies in the response; ``counts`` holds each of those
    points' register count, in the same order.
    """

    unit_id: int
    table: ModbusTable
    function: int
    address: int
    count: int
    points: tuple[tuple[int, int], ...]
    counts: tuple[int, ...]

    @property
    def end(self) -> int:
        """The first address after the request."""
        return self.address + self.count


def _span(point: ModbusPoint | PointCodec, binding: ModbusBinding) -> tuple[int, int, int]:
    """(unit id, PDU address, register count) of a point, validated."""
    if isinstance(point, PointCodec):
        return point.unit_id, point.address, point.count
    name = point.property
    if point.table.is_bit_table:
        count = 1
    elif point.type in (ModbusType.STRING, ModbusType.BYTES):
        if point.count is None or not 1 <= point.count <= MAX_REGISTERS:
            raise ModbusConfigError(
                f"{name}: {point.type.value} needs count: 1..{MAX_REGISTERS} (got {point.count})"
            )
        count = point.count
    else:
        count = point.type.register_count or 1
        if point.count is not None and point.count != count:
            raise ModbusConfigError(
                f"{name}: count {point.count} disagrees with {point.type.value} ({count})"
            )
    address = pdu_address(point.address, binding, name)
    if address + count - 1 > 65535:
        raise ModbusConfigError(f"{name}: registers run past address 65535")
    unit = point.unit_id if point.unit_id is not None else binding.unit_id
    return unit, address, count


def _limit(value: int | None, default: int, ceiling: int, what: str) -> int:
    limit = default if value is None else value
    if type(limit) is not int or not 1 <= limit <= ceiling:
        raise ModbusConfigError(f"{what} must be an integer in 1..{ceiling} (got {limit!r})")
    return limit


def plan_reads(
    points: Sequence[ModbusPoint | PointCodec],
    binding: ModbusBinding,
    *,
    max_registers: int | None = None,
    max_coils: int | None = None,
    max_gap: int | None = None,
) -> list[ReadRequest]:
    """The read requests that cover ``points`` (each exactly once), fewest first-fit.

    Raises :class:`ModbusConfigError` for a bad limit or a point wider than the limit.
    """
    reg_limit = _limit(
        max_registers, binding.max_registers_per_read, MAX_REGISTERS, "max_registers"
    )
    coil_limit = _limit(max_coils, binding.max_coils_per_read, MAX_COILS, "max_coils")
    gap = binding.max_gap if max_gap is None else max_gap
    if type(gap) is not int or gap < 0:
        raise ModbusConfigError(f"max_gap must be an integer >= 0 (got {gap!r})")
    groups: dict[tuple[int, ModbusTable], list[tuple[int, int, int]]] = {}
    for index, point in enumerate(points):
        unit, address, count = _span(point, binding)
        limit = coil_limit if point.table.is_bit_table else reg_limit
        if count > limit:
            name = point.name if isinstance(point, PointCodec) else point.property
            raise ModbusConfigError(
                f"{name}: {count} registers do not fit one read of at most {limit}"
            )
        groups.setdefault((unit, point.table), []).append((address, count, index))
    requests: list[ReadRequest] = []
    for (unit, table), items in sorted(
        groups.items(), key=lambda g: (g[0][0], _TABLE_ORDER[g[0][1]])
    ):
        limit = coil_limit if table.is_bit_table else reg_limit
        items.sort()
        start, end = items[0][0], items[0][0] + items[0][1]
        members: list[tuple[int, int, int]] = [items[0]]
        for item in items[1:]:
            address, count, _ = item
            new_end = max(end, address + count)
            if address - end <= gap and new_end - start <= limit:
                end = new_end
                members.append(item)
                continue
            requests.append(_request(unit, table, start, end, members))
            start, end, members = address, address + count, [item]
        requests.append(_request(unit, table, start, end, members))
    return requests


def _request(
    unit: int, table: ModbusTable, start: int, end: int, members: list[tuple[int, int, int]]
) -> ReadRequest:
    ordered = sorted((address - start, index, count) for address, count, index in members)
    return ReadRequest(
        unit_id=unit,
        table=table,
        function=table.read_function,
        address=start,
        count=end - start,
        points=tuple((index, offset) for offset, index, _ in ordered),
        counts=tuple(count for _, _, count in ordered),
    )


def split_response(request: ReadRequest, data: Sequence[int]) -> dict[int, Sequence[int]]:
    """Each point's slice of a response (registers, or bits for coils and discrete inputs).

    Raises :class:`ModbusCodecError` when the response has the wrong length; bit responses may
    carry up to the next multiple of 8 (frame padding), which is ignored.
    """
    try:
        got = len(data)
    except TypeError:
        raise ModbusCodecError(f"{_where(request)}: response is not a sequence") from None
    most = -(-request.count // 8) * 8 if request.table.is_bit_table else request.count
    if not request.count <= got <= most:
        unit = "bits" if request.table.is_bit_table else "registers"
        raise ModbusCodecError(f"{_where(request)}: expected {request.count} {unit}, got {got}")
    return {
        index: data[offset : offset + count]
        for (index, offset), count in zip(request.points, request.counts, strict=True)
    }


def decode_response(
    request: ReadRequest, data: Sequence[int], codecs: Sequence[PointCodec]
) -> dict[int, Decoded]:
    """Decode every point of ``request`` from the response ``data``; ``codecs[i]`` is the
    compiled point ``i`` of the sequence the request was planned from.

    Raises :class:`ModbusCodecError` as :func:`split_response` does, or as a point's decoder
    does for a malformed register."""
    try:
        got = len(data)
    except TypeError:
        got = -1
    if got != request.count:
        split_response(request, data)  # bit padding is fine; anything else raises
    return {
        index: codecs[index].decode(data[offset : offset + count])
        for (index, offset), count in zip(request.points, request.counts, strict=True)
    }


def _where(request: ReadRequest) -> str:
    return (
        f"read {request.table.value} {request.address}..{request.end - 1} "
        f"(unit {request.unit_id}, function {request.function})"
    )
