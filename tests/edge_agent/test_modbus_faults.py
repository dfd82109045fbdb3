"""Misbehaving Modbus devices against a running agent (in-process ``EdgeAgent``, a real
registry process, real peers on 127.0.0.1):

* peers that answer garbage, too few or too many registers, exception 2 or 6, a truncated
  frame, nothing, or hang up: the agent keeps running, their values reach the registry with
  bad quality and a ``_diagnostic`` event, their diagnostic state and counters say what
  happened, they recover when the peer behaves again, and a healthy device polled beside them
  loses nothing;
* a device that flaps (its pymodbus simulator stopped and started again and again): the agent
  goes offline and back online each time, reconnecting with backoff, and the other device is
  not disturbed;
* the driver under hypothesis-generated answers: a value or bad quality with a reason, never an
  exception, and the next correct answer is read correctly.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config import load_edge_config
from edge_agent.supervisor import DeviceStatus, EdgeAgent
from protocol_adapters.modbus.codec import Decoded
from protocol_adapters.modbus.driver import ModbusDriver
from protocol_adapters.modbus.simulator import ModbusSimulator
from tests.edge_agent.agent_process import (
    PeerLoop,
    RegistryHandle,
    until,
    wait_for_async,
    write_counter_model,
    write_edge_config,
)
from tests.edge_agent.faulty_modbus_peer import Behaviour, ModbusPeer
from thing_models.messages import Quality
from thing_models.yaml_format import load_model_file

UPLINK = {"backoff_initial_s": 0.1, "backoff_max_s": 0.5}
FAULTS = {
    "garbage": Behaviour.GARBAGE,
    "wrong-count": Behaviour.WRONG_COUNT,
    "extra-count": Behaviour.EXTRA_COUNT,
    "illegal-address": Behaviour.EXCEPTION_ADDRESS,
    "busy": Behaviour.EXCEPTION_BUSY,
    "truncated": Behaviour.TRUNCATED,
    "silent": Behaviour.SILENT,
    "hang-up": Behaviour.HANG_UP,
}
STEADY = "steady"


def run_with_agent(
    tmp_path: Path,
    devices: tuple[str, ...],
    scenario: Callable[[RegistryHandle, Path], Awaitable[None]],
) -> None:
    models = write_counter_model(tmp_path / "models")
    with RegistryHandle(tmp_path / "registry.db") as registry:
        registry.setup(models, devices)
        asyncio.run(asyncio.wait_for(scenario(registry, models), 90))


async def started(tmp_path: Path, registry: str, models: Path, ports: dict[str, int]) -> EdgeAgent:
    config = load_edge_config(
        write_edge_config(tmp_path, registry, ports, models_dir=models, poll="50ms")
    )
    return EdgeAgent(config, uplink_options=UPLINK)


def device(agent: EdgeAgent, device_id: str) -> DeviceStatus:
    return agent.status().devices[device_id]


async def values(registry: RegistryHandle, device_id: str) -> list[int]:
    return await asyncio.to_thread(registry.counter_values, device_id)


def assert_contiguous(device_id: str, history: list[int]) -> None:
    """A counter device's history: every value once, in order, none skipped."""
    assert history, f"{device_id}: no values"
    repeats = sorted(v for v, n in Counter(history).items() if n > 1)
    assert not repeats, f"{device_id}: repeated values {repeats[:10]}"
    assert history == list(range(history[0], history[0] + len(history))), (
        f"{device_id}: values missing or out of order"
    )


# --------------------------------------------------------------------------- faulty peers


def test_faulty_peers_give_bad_quality_and_diagnostics_and_spare_the_others(
    tmp_path: Path,
) -> None:
    async def scenario(registry: RegistryHandle, models: Path) -> None:
        peers = {name: ModbusPeer(behaviour, seed=7) for name, behaviour in FAULTS.items()}
        peers[STEADY] = ModbusPeer(Behaviour.COUNTER)
        ports = {name: await peer.start() for name, peer in peers.items()}
        agent = await started(tmp_path, registry.target, models, ports)
        task = asyncio.create_task(agent.run())
        try:
            await _faults_reported(agent, registry, task)
            # the peers behave again: every device comes back online with good values
            for name in FAULTS:
                peers[name].behaviour = Behaviour.COUNTER
            await wait_for_async(
                lambda: all(device(agent, n).diagnostics.state == "online" for n in FAULTS),
                "every device online again",
            )
            for name in FAULTS:

                async def good_values(device_id: str = name) -> bool:
                    return bool(await values(registry, device_id))

                await until(good_values, f"{name}: good values again")
            assert not task.done()
            steady = await values(registry, STEADY)
            assert_contiguous(STEADY, steady)
            assert len(steady) >= 20
            status = device(agent, STEADY)
            assert status.diagnostics.errors == 0
            assert status.diagnostics.state == "online"
            assert not await asyncio.to_thread(registry.events, STEADY)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 30)
            for peer in peers.values():
                await peer.stop()

    run_with_agent(tmp_path, (*FAULTS, STEADY), scenario)


async def _faults_reported(
    agent: EdgeAgent, registry: RegistryHandle, task: asyncio.Task[None]
) -> None:
    """Each faulty device: bad-quality history, a ``_diagnostic`` event, counters that match."""

    async def reported(name: str) -> bool:
        history = await asyncio.to_thread(registry.history, name)
        events = await asyncio.to_thread(registry.events, name)
        return (
            any(p.quality == "bad" and p.value is None for p in history)
            and any(e.name == "_diagnostic" for e in events)
            and device(agent, name).diagnostics.errors >= 3
        )

    for name in FAULTS:

        async def check(device_id: str = name) -> bool:
            assert not task.done(), "the agent stopped"
            return await reported(device_id)

        await until(check, f"{name}: a bad value, a diagnostic event and 3 errors")

    for name, behaviour in FAULTS.items():
        status = device(agent, name)
        diagnostics = status.diagnostics
        assert status.task_errors == 0, f"{name}: the device task crashed: {status.last_error}"
        assert diagnostics.state in ("degraded", "offline"), name
        assert diagnostics.last_error, name
        history = await asyncio.to_thread(registry.history, name)
        assert all(p.quality == "bad" and p.value is None for p in history), (
            f"{name}: a value of a faulty device was reported good: {history[:3]}"
        )
        events = [
            e for e in await asyncio.to_thread(registry.events, name) if e.name == "_diagnostic"
        ]
        assert events, name
        params = events[0].params
        assert params["property"] == "counter"
        assert params["quality"] == "bad"
        assert params["message"], f"{name}: a diagnostic event without a reason"
        if behaviour is Behaviour.EXCEPTION_ADDRESS:
            assert diagnostics.exception_codes.get(2, 0) >= 3
            assert "exception 2" in str(params["message"])
        if behaviour is Behaviour.EXCEPTION_BUSY:
            assert diagnostics.exception_codes.get(6, 0) >= 3
            assert "exception 6" in str(params["message"])
        if behaviour in (Behaviour.SILENT, Behaviour.TRUNCATED):
            assert diagnostics.timeouts >= 3, f"{name}: {diagnostics}"
        if behaviour is Behaviour.SILENT:
            assert diagnostics.state == "offline"  # consecutive timeouts
        if behaviour in (Behaviour.WRONG_COUNT, Behaviour.EXTRA_COUNT):
            assert diagnostics.state == "degraded"  # it answers, wrongly
            assert not diagnostics.exception_codes
            assert "register" in str(params["message"])
        if behaviour is Behaviour.HANG_UP:
            assert diagnostics.state == "offline"
            assert status.connect_attempts >= 2  # it keeps reconnecting


# --------------------------------------------------------------------------- flapping


def test_a_flapping_device_reconnects_with_backoff_and_spares_the_others(tmp_path: Path) -> None:
    flaps = 3

    async def scenario(registry: RegistryHandle, models: Path) -> None:
        model = load_model_file(models / "counter.yaml")
        flappy = ModbusSimulator(model, seed=3, tick_ms=50)
        steady = ModbusPeer(Behaviour.COUNTER)
        ports = {"flappy": await flappy.start(), STEADY: await steady.start()}
        agent = await started(tmp_path, registry.target, models, ports)
        task = asyncio.create_task(agent.run())
        try:
            await wait_for_async(
                lambda: device(agent, "flappy").diagnostics.state == "online", "flappy online"
            )
            for _ in range(flaps):
                await flappy.stop()
                await wait_for_async(
                    lambda: device(agent, "flappy").diagnostics.state == "offline",
                    "flappy offline",
                )
                attempts = device(agent, "flappy").connect_attempts
                steady_polls = device(agent, STEADY).polls
                await asyncio.sleep(2.0)  # the outage itself, not a synchronisation
                # reconnect min 50 ms, max 400 ms: without backoff 2 s would be ~40 attempts
                tries = device(agent, "flappy").connect_attempts - attempts
                assert 2 <= tries <= 15, f"{tries} connect attempts in 2 s"
                assert device(agent, STEADY).polls >= steady_polls + 20, "steady was held up"
                await flappy.start()
                polls = device(agent, "flappy").polls

                def back(before: int = polls) -> bool:
                    status = device(agent, "flappy")
                    return status.diagnostics.state == "online" and status.polls > before

                await wait_for_async(back, "flappy online again")
            assert not task.done()
            status = device(agent, "flappy")
            assert status.task_errors == 0, status.last_error
            assert status.connect_attempts >= flaps * 2
            # every outage was reported: a bad value with a diagnostic event each
            history = await asyncio.to_thread(registry.history, "flappy")
            assert sum(1 for p in history if p.quality == "good") >= flaps + 1
            assert sum(1 for p in history if p.quality == "bad") >= flaps
            events = await asyncio.to_thread(registry.events, "flappy")
            diagnostics = [e for e in events if e.name == "_diagnostic"]
            assert len(diagnostics) >= flaps
            assert all(e.params["quality"] == "bad" for e in diagnostics)
            steady_status = device(agent, STEADY)
            assert steady_status.diagnostics.errors == 0
            assert steady_status.task_errors == 0
            assert_contiguous(STEADY, await values(registry, STEADY))
        finally:
            agent.stop()
            await asyncio.wait_for(task, 30)
            await flappy.stop()
            await steady.stop()

    run_with_agent(tmp_path, ("flappy", STEADY), scenario)


# --------------------------------------------------------------------------- fuzzed answers


def _pdus() -> st.SearchStrategy[bytes]:
    """Answers to a read of holding registers 0-1: arbitrary PDUs, and near misses of the
    right one (byte counts, exception codes, function codes, register data all varied)."""
    near = st.builds(
        lambda function, count, data: bytes([function, count]) + data,
        st.sampled_from([3, 4, 0x83, 0x84, 0]),
        st.integers(0, 255),
        st.binary(max_size=12),
    )
    exception = st.builds(
        lambda function, code: bytes([function, code]),
        st.sampled_from([0x83, 0x90, 0x81]),
        st.integers(0, 255),
    )
    return st.one_of(st.binary(min_size=1, max_size=24), near, exception)


def test_fuzzed_answers_give_a_value_or_bad_quality_never_an_exception(tmp_path: Path) -> None:
    model = load_model_file(write_counter_model(tmp_path / "models") / "counter.yaml")
    binding = model.bindings.modbus
    assert binding is not None
    with PeerLoop() as peers:
        peer = peers.start(Behaviour.SCRIPTED)
        driver = ModbusDriver("127.0.0.1", peer.port, binding, model, timeout_s=0.05)

        async def read(script: bytes) -> dict[str, Decoded]:
            peer.behaviour, peer.script = Behaviour.SCRIPTED, script
            readings = await driver.read_all()
            peer.behaviour = Behaviour.COUNTER
            return readings

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(_pdus())
        def check(script: bytes) -> None:
            requests = driver.diagnostics.requests
            reading = peers.call(read(script))["counter"]
            assert (reading.quality, reading.value is None) in (
                (Quality.GOOD, False),
                (Quality.BAD, True),
            ), reading
            assert reading.quality is Quality.GOOD or reading.reason
            assert driver.diagnostics.requests > requests
            # the next, correct answer is read correctly: no junk left in the connection
            after = peers.call(driver.read_all())["counter"]
            assert after.quality is Quality.GOOD, after
            assert after.value == peer.served

        try:
            check()
        finally:
            peers.call(driver.close())
