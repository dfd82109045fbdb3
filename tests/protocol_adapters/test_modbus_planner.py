"""The Modbus read planner: table-driven cases, the example models, and hypothesis properties
(every point covered exactly once, limits kept, no overlap, sorted, gaps at most max_gap)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol_adapters.modbus import (
    Decoded,
    ModbusCodecError,
    ModbusConfigError,
    ReadRequest,
    compile_binding,
    decode_response,
    plan_reads,
    split_response,
)
from protocol_adapters.modbus.codec import compile_point
from thing_models import load_model_file
from thing_models.messages import Quality
from thing_models.model import ModbusBinding, ModbusPoint, ModbusTable, ModbusType

HR, IR = ModbusTable.HOLDING_REGISTER, ModbusTable.INPUT_REGISTER
COIL, DI = ModbusTable.COIL, ModbusTable.DISCRETE_INPUT
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
BINDING = ModbusBinding()
SIZES = {1: ModbusType.UINT16, 2: ModbusType.FLOAT32, 4: ModbusType.UINT64}


def pt(address: int, size: int = 1, table: ModbusTable = HR, **kwargs: Any) -> ModbusPoint:
    if table.is_bit_table:
        return ModbusPoint(f"p{address}", table, address, ModbusType.BIT, **kwargs)
    if size in SIZES:
        return ModbusPoint(f"p{address}", table, address, SIZES[size], **kwargs)
    return ModbusPoint(f"p{address}", table, address, ModbusType.STRING, count=size, **kwargs)


def spans(requests: list[ReadRequest]) -> list[tuple[str, int, int, tuple[int, ...]]]:
    return [(r.table.value, r.address, r.count, tuple(i for i, _ in r.points)) for r in requests]


@pytest.mark.parametrize(
    ("points", "options", "expected"),
    [
        # neighbours merge
        ([pt(0, 2), pt(2, 2), pt(4, 1)], {}, [("holding_register", 0, 5, (0, 1, 2))]),
        # a gap of exactly max_gap merges, one more does not
        ([pt(0), pt(9)], {"max_gap": 8}, [("holding_register", 0, 10, (0, 1))]),
        (
            [pt(0), pt(10)],
            {"max_gap": 8},
            [("holding_register", 0, 1, (0,)), ("holding_register", 10, 1, (1,))],
        ),
        # max_gap 0: never read an unmapped register
        (
            [pt(0), pt(2)],
            {"max_gap": 0},
            [("holding_register", 0, 1, (0,)), ("holding_register", 2, 1, (1,))],
        ),
        ([pt(0), pt(1)], {"max_gap": 0}, [("holding_register", 0, 2, (0, 1))]),
        # input order does not matter; indices refer to the input
        ([pt(4, 2), pt(0, 2)], {}, [("holding_register", 0, 6, (1, 0))]),
        # the request limit splits
        (
            [pt(0, 2), pt(2, 2), pt(4, 2)],
            {"max_registers": 4},
            [("holding_register", 0, 4, (0, 1)), ("holding_register", 4, 2, (2,))],
        ),
        # a point exactly the limit fits
        ([pt(0, 125)], {}, [("holding_register", 0, 125, (0,))]),
        (
            [pt(0, 100), pt(100, 25), pt(125)],
            {},
            [("holding_register", 0, 125, (0, 1)), ("holding_register", 125, 1, (2,))],
        ),
        # tables never mix; requests sorted by table's read function, then address
        (
            [pt(0, table=IR), pt(0, table=HR), pt(0, table=COIL), pt(0, table=DI)],
            {},
            [
                ("coil", 0, 1, (2,)),
                ("discrete_input", 0, 1, (3,)),
                ("holding_register", 0, 1, (1,)),
                ("input_register", 0, 1, (0,)),
            ],
        ),
        # shared status word: bit/mask points share one request
        (
            [pt(1, bit=0), pt(1, bit=4), pt(1, mask=0x000C, shift=2), pt(0)],
            {},
            [("holding_register", 0, 2, (3, 0, 1, 2))],
        ),
        # coils: up to 2000 per request
        (
            [pt(0, table=COIL), pt(1999, table=COIL), pt(2000, table=COIL)],
            {"max_gap": 2000},
            [("coil", 0, 2000, (0, 1)), ("coil", 2000, 1, (2,))],
        ),
        (
            [pt(0, table=COIL), pt(5, table=COIL)],
            {"max_coils": 5, "max_gap": 10},
            [("coil", 0, 1, (0,)), ("coil", 5, 1, (1,))],
        ),
        ([], {}, []),
    ],
)
def test_plans(
    points: list[ModbusPoint],
    options: dict[str, int],
    expected: list[tuple[str, int, int, tuple[int, ...]]],
) -> None:
    assert spans(plan_reads(points, BINDING, **options)) == expected


def test_request_fields() -> None:
    [request] = plan_reads([pt(4, 2), pt(10, 8)], ModbusBinding(unit_id=5))
    assert request == ReadRequest(
        unit_id=5, table=HR, function=3, address=4, count=14, points=((0, 0), (1, 6)), counts=(2, 8)
    )
    assert request.end == 18


def test_units_are_planned_apart() -> None:
    requests = plan_reads([pt(0), pt(1, unit_id=2), pt(2)], ModbusBinding(unit_id=1))
    assert [(r.unit_id, r.address, r.count) for r in requests] == [(1, 0, 3), (2, 1, 1)]


def test_limits_default_to_the_binding() -> None:
    binding = ModbusBinding(max_registers_per_read=4, max_gap=0, max_coils_per_read=1)
    points = [pt(0, 2), pt(2, 2), pt(4, 2), pt(7), pt(0, table=COIL), pt(1, table=COIL)]
    assert [(r.address, r.count) for r in plan_reads(points, binding)] == [
        (0, 1),
        (1, 1),
        (0, 4),
        (4, 2),
        (7, 1),
    ]
    # keyword arguments override the binding
    assert len(plan_reads(points, binding, max_registers=125, max_gap=8, max_coils=2000)) == 2


def test_one_based_addresses_become_pdu_addresses() -> None:
    requests = plan_reads([pt(1), pt(3, 2)], ModbusBinding(zero_based=False))
    assert [(r.address, r.count) for r in requests] == [(0, 4)]
    with pytest.raises(ModbusConfigError, match="one-based"):
        plan_reads([pt(0)], ModbusBinding(zero_based=False))


def test_compiled_codecs_plan_like_their_points() -> None:
    binding = ModbusBinding(zero_based=False, unit_id=4)
    points = [pt(1), pt(3, 2), pt(1, table=COIL)]
    codecs = [compile_point(p, binding) for p in points]
    assert plan_reads(codecs, binding) == plan_reads(points, binding)


@pytest.mark.parametrize(
    ("points", "options", "message"),
    [
        ([pt(0, 4)], {"max_registers": 3}, "4 registers do not fit one read of at most 3"),
        ([pt(0)], {"max_registers": 126}, "max_registers must be an integer in 1..125"),
        ([pt(0)], {"max_registers": 0}, "max_registers"),
        ([pt(0)], {"max_coils": 2001}, "max_coils must be an integer in 1..2000"),
        ([pt(0)], {"max_gap": -1}, "max_gap must be an integer >= 0"),
        ([ModbusPoint("s", HR, 0, ModbusType.STRING)], {}, "needs count"),
        ([ModbusPoint("f", HR, 0, ModbusType.FLOAT32, count=1)], {}, "disagrees"),
        ([pt(65535, 2)], {}, "past address 65535"),
    ],
)
def test_plan_errors(points: list[ModbusPoint], options: dict[str, int], message: str) -> None:
    with pytest.raises(ModbusConfigError, match=message):
        plan_reads(points, BINDING, **options)


def test_split_response() -> None:
    [request] = plan_reads([pt(0, 2), pt(3), pt(3, bit=1)], BINDING)
    assert split_response(request, [10, 11, 12, 13]) == {0: [10, 11], 1: [13], 2: [13]}
    for wrong in ([1, 2, 3], [1, 2, 3, 4, 5]):
        with pytest.raises(ModbusCodecError, match="expected 4 registers, got"):
            split_response(request, wrong)
    with pytest.raises(ModbusCodecError, match="not a sequence"):
        split_response(request, None)  # type: ignore[arg-type]


def test_split_bit_responses_ignore_frame_padding() -> None:
    [request] = plan_reads([pt(0, table=COIL), pt(9, table=COIL)], BINDING)
    bits = [True] + [False] * 8 + [True]
    assert split_response(request, bits) == {0: [True], 1: [True]}
    assert split_response(request, [*bits, False] * 1 + [False] * 5) == {0: [True], 1: [True]}
    with pytest.raises(ModbusCodecError, match="expected 10 bits, got 17"):
        split_response(request, bits + [False] * 7)


def test_decode_response() -> None:
    binding = ModbusBinding()
    points = [pt(0, 2), pt(2, bit=15), pt(2, mask=0x00FF)]
    codecs = compile_binding(ModbusBinding(points=tuple(points)))
    [request] = plan_reads(points, binding)
    assert decode_response(request, [0x3F80, 0, 0x8012], codecs) == {
        0: Decoded(1.0, Quality.GOOD),
        1: Decoded(True, Quality.GOOD),
        2: Decoded(0x12, Quality.GOOD),
    }


# --------------------------------------------------------------------------- example models


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # 14 points: the relay coil, and every holding register in one read (gaps 25..29 <= 8)
        ("energy-meter-3p", [("coil", 0, 1), ("holding_register", 0, 38)]),
        ("lift-controller", [("coil", 0, 1), ("input_register", 0, 10)]),
        (
            "ev-charger",
            [
                ("discrete_input", 0, 1),
                ("holding_register", 0, 10),
                ("holding_register", 20, 4),
                ("holding_register", 100, 28),
                ("holding_register", 200, 3),
            ],
        ),
        # one-based: input registers 1..16 are PDU 0..15
        (
            "water-meter",
            [("coil", 0, 1), ("holding_register", 100, 2), ("input_register", 0, 16)],
        ),
    ],
)
def test_example_models_plan(name: str, expected: list[tuple[str, int, int]]) -> None:
    model = load_model_file(EXAMPLES / f"{name}.yaml")
    binding = model.bindings.modbus
    assert binding is not None
    requests = plan_reads(binding.points, binding)
    assert [(r.table.value, r.address, r.count) for r in requests] == expected
    assert sorted(i for r in requests for i, _ in r.points) == list(range(len(binding.points)))
    # and every response decodes
    codecs = compile_binding(binding, model)
    for request in requests:
        readings = decode_response(request, [0] * request.count, codecs)
        assert set(readings) == {i for i, _ in request.points}


def test_energy_meter_with_a_device_limit() -> None:
    model = load_model_file(EXAMPLES / "energy-meter-3p.yaml")
    binding = model.bindings.modbus
    assert binding is not None
    requests = plan_reads(binding.points, binding, max_registers=24, max_gap=0)
    assert [(r.address, r.count) for r in requests if r.table is HR] == [(0, 24), (24, 1), (30, 8)]


# --------------------------------------------------------------------------- properties


@st.composite
def layouts(draw: st.DrawFn) -> list[ModbusPoint]:
    """Valid layouts: per (unit, table) non-overlapping points, plus bit points that share a
    register with each other, in shuffled order."""
    points: list[ModbusPoint] = []
    for unit in draw(st.lists(st.sampled_from([1, 2]), min_size=1, max_size=2, unique=True)):
        for table in draw(st.lists(st.sampled_from(list(ModbusTable)), max_size=4, unique=True)):
            address = draw(st.integers(0, 300))
            for _ in range(draw(st.integers(0, 25))):
                size = 1 if table.is_bit_table else draw(st.sampled_from([1, 1, 2, 4, 3, 10]))
                if address + size > 65536:
                    break
                shared = draw(st.integers(1, 3)) if size == 1 and not table.is_bit_table else 1
                for bit in range(shared):
                    extra: dict[str, Any] = {"bit": bit} if shared > 1 else {}
                    points.append(pt(address, size, table, unit_id=unit, **extra))
                address += size + draw(st.sampled_from([0, 0, 1, 2, 5, 9, 40, 200, 3000]))
    return draw(st.permutations(points))


@given(
    points=layouts(),
    max_registers=st.integers(10, 125),
    max_coils=st.integers(1, 2000),
    max_gap=st.integers(0, 50),
)
def test_plan_properties(
    points: list[ModbusPoint], max_registers: int, max_coils: int, max_gap: int
) -> None:
    binding = ModbusBinding(unit_id=1)
    options = {"max_registers": max_registers, "max_coils": max_coils, "max_gap": max_gap}
    requests = plan_reads(points, binding, **options)
    # deterministic
    assert plan_reads(points, binding, **options) == requests
    # every point covered exactly once, inside its request
    covered = [i for r in requests for i, _ in r.points]
    assert sorted(covered) == list(range(len(points)))
    order = {t: t.read_function for t in ModbusTable}
    keys = [(r.unit_id, order[r.table], r.address) for r in requests]
    assert keys == sorted(keys)  # sorted
    for request in requests:
        limit = max_coils if request.table.is_bit_table else max_registers
        assert 1 <= request.count <= limit
        assert request.function == request.table.read_function
        used = [False] * request.count
        for (index, offset), count in zip(request.points, request.counts, strict=True):
            point = points[index]
            assert (point.unit_id, point.table) == (request.unit_id, request.table)
            assert point.address == request.address + offset
            assert count == point.register_count
            assert offset >= 0
            assert offset + count <= request.count
            used[offset : offset + count] = [True] * count
        # no unused edges, and never more than max_gap unused registers in a row
        assert used[0]
        assert used[-1]
        run = longest = 0
        for flag in used:
            run = 0 if flag else run + 1
            longest = max(longest, run)
        assert longest <= max_gap
    # requests of one unit and table neither overlap nor could have been merged
    for first, second in itertools.pairwise(requests):
        if (first.unit_id, first.table) != (second.unit_id, second.table):
            continue
        assert first.end <= second.address
        limit = max_coils if first.table.is_bit_table else max_registers
        assert second.address - first.end > max_gap or second.end - first.address > limit


@given(points=layouts())
def test_split_response_returns_each_points_registers(points: list[ModbusPoint]) -> None:
    for request in plan_reads(points, BINDING):
        data = list(range(request.address, request.end))
        slices = split_response(request, data)
        assert set(slices) == {i for i, _ in request.points}
        for index, registers in slices.items():
            point = points[index]
            assert list(registers) == list(
                range(point.address, point.address + point.register_count)
            )
