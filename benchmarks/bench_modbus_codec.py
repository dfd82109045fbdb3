"""Benchmark: Modbus point values decoded per second by the compiled register codec.

Takes the example three-phase energy meter (``examples/models/energy-meter-3p.yaml``: 13
holding-register points in one planned 38-register read: float32, int32 and int16/uint16 with
scale and rounding, uint64 word-swapped with scale, a masked enum, an 8-register string),
generates random responses of plausible values and measures, in one process:

* ``values_per_s``: :func:`decode_response` on whole responses (split into points, every
  decoding step, a :class:`Decoded` per point: what the driver runs);
* ``values_per_s_single``: :meth:`PointCodec.decode` point by point on pre-sliced registers;
* ``ceiling_struct_values_per_s``: the raw ceiling on the same pre-sliced registers: one
  precompiled ``struct`` pack + unpack per point (no scaling, masks, enums, checks or result);
* ``pymodbus_values_per_s``: pymodbus's ``ModbusClientMixin.convert_from_registers`` on the
  same slices (raw values only; it has no byte order, scale, mask or enum).

Prints one JSON line. Run: ``.venv/bin/python benchmarks/bench_modbus_codec.py [--seconds 1.5]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import machine
from pymodbus.client.mixin import ModbusClientMixin

from protocol_adapters.modbus import compile_binding, decode_response, plan_reads
from protocol_adapters.modbus.codec import PointCodec
from thing_models import load_model_file
from thing_models.model import ByteOrder, ModbusTable, ModbusType

MODEL = Path(__file__).resolve().parents[1] / "examples" / "models" / "energy-meter-3p.yaml"
#: The wire can deliver ~0.6M registers/s per client (../shared/GUIDE.md section 3), about
#: 0.2M meter values/s; the codec must stay well clear of being the bottleneck.
TARGET_VALUES_PER_S = 500_000

_DT = ModbusClientMixin.DATATYPE
_PYMODBUS_TYPES = {
    ModbusType.INT16: _DT.INT16,
    ModbusType.UINT16: _DT.UINT16,
    ModbusType.INT32: _DT.INT32,
    ModbusType.UINT32: _DT.UINT32,
    ModbusType.INT64: _DT.INT64,
    ModbusType.UINT64: _DT.UINT64,
    ModbusType.FLOAT32: _DT.FLOAT32,
    ModbusType.FLOAT64: _DT.FLOAT64,
    ModbusType.STRING: _DT.STRING,
}
_STRUCT_CODES = {
    ModbusType.INT16: "h",
    ModbusType.UINT16: "H",
    ModbusType.INT32: "i",
    ModbusType.UINT32: "I",
    ModbusType.INT64: "q",
    ModbusType.UINT64: "Q",
    ModbusType.FLOAT32: "f",
    ModbusType.FLOAT64: "d",
}


def random_value(codec: PointCodec, rng: random.Random) -> Any:
    """A plausible value for one meter point (what the device would hold)."""
    if codec.type is ModbusType.STRING:
        return "MTR" + "".join(rng.choices("0123456789", k=rng.randint(4, 12)))
    if codec.point.enum_map:
        return rng.choice(codec.point.enum_map)[1]
    if codec.type is ModbusType.FLOAT32:
        return rng.uniform(0, 400)
    if codec.type is ModbusType.UINT64:
        return round(rng.uniform(0, 1e6), 3)
    if codec.type is ModbusType.INT16:
        return round(rng.uniform(-1, 1), 3)
    if codec.type is ModbusType.UINT16:
        return round(rng.uniform(45, 65), 2)
    return round(rng.uniform(-1e5, 1e5), 1)


def rate(run_once: Callable[[], int], seconds: float) -> float:
    """Values per second: ``run_once`` (returns values decoded) repeated for about ``seconds``,
    in five slices, the best slice kept."""
    best = 0.0
    for _ in range(5):
        values = 0
        start = time.perf_counter()
        deadline = start + seconds / 5
        while True:
            values += run_once()
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, values / (now - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.5, help="time per measurement")
    parser.add_argument("--responses", type=int, default=500, help="distinct responses")
    args = parser.parse_args(argv)

    model = load_model_file(MODEL)
    binding = model.bindings.modbus
    assert binding is not None
    codecs = compile_binding(binding, model)
    [request] = [r for r in plan_reads(codecs, binding) if r.table is ModbusTable.HOLDING_REGISTER]
    members = [
        (index, offset, count)
        for (index, offset), count in zip(request.points, request.counts, strict=True)
    ]
    rng = random.Random(20240611)
    responses: list[list[int]] = []
    for _ in range(args.responses):
        registers = [0] * request.count
        for index, offset, count in members:
            codec = codecs[index]
            current = [rng.randrange(65536) for _ in range(count)]  # bits the point leaves
            registers[offset : offset + count] = codec.encode_into(
                random_value(codec, rng), current
            )
        responses.append(registers)
    slices = [
        [(codecs[index], registers[offset : offset + count]) for index, offset, count in members]
        for registers in responses
    ]
    n_values = len(members) * len(responses)

    # Raw ceiling: the same slices through one precompiled pack + unpack per point.
    raw_structs: list[tuple[struct.Struct, struct.Struct]] = []
    pymodbus_args: list[tuple[Any, str]] = []
    for index, _, count in members:
        codec = codecs[index]
        point = codec.point
        word = point.word_order or binding.word_order
        byte = point.byte_order or binding.byte_order
        code = _STRUCT_CODES.get(codec.type, f"{2 * count}s")
        regs_endian = ">" if byte == word else "<"
        value_endian = ">" if word is ByteOrder.BIG else "<"
        raw_structs.append(
            (struct.Struct(f"{regs_endian}{count}H"), struct.Struct(value_endian + code))
        )
        pymodbus_args.append((_PYMODBUS_TYPES[codec.type], word.value))
    raw_slices = [
        [
            (pack_s.pack, value_s.unpack, regs)
            for (pack_s, value_s), (_, regs) in zip(raw_structs, row, strict=True)
        ]
        for row in slices
    ]
    pymodbus_slices = [
        [(dtype, word, regs) for (dtype, word), (_, regs) in zip(pymodbus_args, row, strict=True)]
        for row in slices
    ]

    # Both agree before timing (raw values; ours are scaled).
    for row, raw_row in zip(slices, raw_slices, strict=True):
        for (codec, regs), (pack, unpack, _) in zip(row, raw_row, strict=True):
            decoded = codec.decode(regs)
            assert decoded.quality == "good", (codec, regs, decoded)
            assert unpack(pack(*regs))[0] is not None

    convert = ModbusClientMixin.convert_from_registers

    def ours() -> int:
        for registers in responses:
            decode_response(request, registers, codecs)
        return n_values

    def ours_single() -> int:
        for row in slices:
            for codec, regs in row:
                codec.decode(regs)
        return n_values

    def ceiling() -> int:
        for row in raw_slices:
            for pack, unpack, regs in row:
                unpack(pack(*regs))
        return n_values

    def library() -> int:
        for row in pymodbus_slices:
            for dtype, word, regs in row:
                convert(regs, dtype, word_order=word)  # type: ignore[arg-type]
        return n_values

    values_per_s = rate(ours, args.seconds)
    single = rate(ours_single, args.seconds)
    ceiling_rate = rate(ceiling, args.seconds)
    library_rate = rate(library, args.seconds)
    result = {
        "benchmark": "modbus_codec",
        "values_per_s": round(values_per_s),
        "values_per_s_single": round(single),
        "ceiling_struct_values_per_s": round(ceiling_rate),
        "pymodbus_values_per_s": round(library_rate),
        "ratio_to_ceiling": round(values_per_s / ceiling_rate, 3),
        "speedup_vs_pymodbus": round(values_per_s / library_rate, 1),
        "target_values_per_s": TARGET_VALUES_PER_S,
        "passed": values_per_s >= TARGET_VALUES_PER_S,
        "points_per_response": len(members),
        "registers_per_response": request.count,
        "python": sys.version.split()[0] + " " + platform.python_implementation(),
        "machine": machine(),
    }
    print(json.dumps(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
