"""A BACnet/IP device following a model's BACnet binding, for installers, tests and the demo.

Each bound object becomes a bacpypes3 local object: inputs are read-only (a write answers
``property:write-access-denied``), outputs and values are commandable (priority array,
relinquish default), and so are the objects the binding's service writes name; analog inputs
wander around their starting value; COV is served by bacpypes3. Test switches: ``reject_rpm``
makes the device reject ReadPropertyMultiple (an old controller), ``reject_cov`` rejects
SubscribeCOV, ``faults`` sets the fault flag and reliability ``over-range`` on the named
objects, ``bbmd`` makes the device a BBMD that accepts foreign-device registrations.

Run it in its own process (``python -m protocol_adapters.bacnet.simulator --model FILE
--address 127.0.0.1:47808 --device-instance 1001``); it prints one ``listening`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bacpypes3.app import Application
from bacpypes3.basetypes import BDTEntry, IPMode
from bacpypes3.errors import PropertyError, UnrecognizedService
from bacpypes3.local.analog import (
    AnalogInputObject,
    AnalogOutputObject,
    AnalogValueObjectCmd,
)
from bacpypes3.local.binary import (
    BinaryInputObject,
    BinaryOutputObject,
    BinaryValueObject,
)
from bacpypes3.local.cmd import Commandable
from bacpypes3.local.cov import GenericCriteria
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import (
    MultiStateInputObject,
    MultiStateOutputObject,
    MultiStateValueObject,
)
from bacpypes3.local.networkport import NetworkPortObject

from protocol_adapters.bacnet.errors import BacnetConfigError, BacnetError
from protocol_adapters.bacnet.mapping import (
    UNIT_SYMBOLS,
    ObjectId,
    parse_object_id,
    point_object_id,
)
from protocol_adapters.bacnet.stack import parse_address, wait_bound
from thing_models.model import DataSchema, DataType, ThingModel

__all__ = ["BacnetSimulator", "main", "spawn", "stop"]


class _ReadOnly:
    """Inputs: every write but out-of-service is refused."""

    async def write_property(
        self, attr: int | str, value: Any, index: int | None = None, priority: int | None = None
    ) -> None:
        if attr not in ("outOfService", "out-of-service"):
            raise PropertyError("writeAccessDenied")
        await super().write_property(attr, value, index, priority)  # type: ignore[misc]


class _AI(_ReadOnly, AnalogInputObject):  # type: ignore[misc]
    pass


class _BI(_ReadOnly, BinaryInputObject):  # type: ignore[misc]
    pass


# bacpypes3 0.0.110 gives multi-state objects the COV-increment criteria, which they cannot
# meet (no cov-increment): a subscription or a change then fails with operational-problem.
class _MSI(_ReadOnly, MultiStateInputObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class _MSO(MultiStateOutputObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class _MSV(Commandable, MultiStateValueObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


# bacpypes3's BinaryValueObjectCmd derives from the non-local class: no COV at all.
class _BV(Commandable, BinaryValueObject):  # type: ignore[misc]
    pass


_CLASSES: dict[str, Any] = {
    "analog-input": _AI,
    "analog-output": AnalogOutputObject,
    "analog-value": AnalogValueObjectCmd,
    "binary-input": _BI,
    "binary-output": BinaryOutputObject,
    "binary-value": _BV,
    "multi-state-input": _MSI,
    "multi-state-output": _MSO,
    "multi-state-value": _MSV,
}


class _Device(Application):  # type: ignore[misc]
    reject_rpm = False
    reject_cov = False

    async def do_ReadPropertyMultipleRequest(self, apdu: Any) -> None:
        if self.reject_rpm:
            raise UnrecognizedService()
        await super().do_ReadPropertyMultipleRequest(apdu)

    async def do_SubscribeCOVRequest(self, apdu: Any) -> None:
        if self.reject_cov:
            raise UnrecognizedService()
        await super().do_SubscribeCOVRequest(apdu)


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    title: str = ""
    schema: DataSchema | None = None
    cov_increment: float | None = None


_UNIT_NAMES = {symbol: name for name, symbol in UNIT_SYMBOLS.items()}


def _initial(schema: DataSchema | None) -> Any:
    if schema is None:
        return 0.0
    if schema.type is DataType.BOOL:
        return "inactive"
    if schema.type is DataType.ENUM:
        ints = [m.value for m in schema.enum if isinstance(m.value, int)]
        return ints[0] if ints else 1
    low = schema.minimum if schema.minimum is not None else 0.0
    high = schema.maximum if schema.maximum is not None else low + 40.0
    return (float(low) + float(high)) / 2


class BacnetSimulator:
    """The device; :meth:`start` opens it on the running loop, :meth:`step` changes inputs."""

    def __init__(
        self,
        model: ThingModel,
        address: str,
        device_instance: int | None = None,
        *,
        reject_rpm: bool = False,
        reject_cov: bool = False,
        faults: Sequence[str] = (),
        bbmd: bool = False,
    ) -> None:
        binding = model.bindings.bacnet
        if binding is None:
            raise BacnetConfigError(f"model {model.name} has no BACnet binding")
        parse_address(address, "simulator address")
        instance = device_instance if device_instance is not None else binding.device_instance
        self.model = model
        self.address = address
        self.device_instance = instance if instance is not None else 1001
        self.reject_rpm = reject_rpm
        self.reject_cov = reject_cov
        self.bbmd = bbmd
        self.faults = {parse_object_id(text, "fault") for text in faults}
        self.objects: dict[ObjectId, Any] = {}
        self._base: dict[ObjectId, float] = {}
        self._ticks = 0
        self.app: Any = None
        self._specs: dict[ObjectId, _Spec] = {}
        for point in binding.points:
            oid = point_object_id(point)
            prop = model.property(point.property)
            if prop is None or point.property_id != "present-value":
                self._specs.setdefault(oid, _Spec(f"{oid.type}-{oid.instance}"))
                continue
            self._specs[oid] = _Spec(prop.id, prop.title, prop.schema, point.cov_increment)
        for write in binding.services:
            # a service's target exists (commandable unless it is an input), typed by the
            # input it takes when no point describes it
            oid = parse_object_id(f"{write.object_type},{write.instance}", write.service)
            service = model.service(write.service)
            field = next(
                (f for f in (service.inputs if service else ()) if f.id == write.param), None
            )
            self._specs.setdefault(
                oid,
                _Spec(f"{oid.type}-{oid.instance}", write.service, field.schema if field else None),
            )

    def _make_object(self, oid: ObjectId, spec: _Spec) -> Any:
        schema, cov = spec.schema, spec.cov_increment
        cls = _CLASSES.get(oid.type)
        if cls is None:
            raise BacnetConfigError(f"{oid}: the simulator has no {oid.type} objects")
        fault = oid in self.faults
        kwargs: dict[str, Any] = {
            "objectIdentifier": (oid.type, oid.instance),
            "objectName": spec.name,
            "description": spec.title,
            "presentValue": _initial(schema),
            "statusFlags": [0, 1 if fault else 0, 0, 0],
            "outOfService": False,
        }
        if fault:
            kwargs["reliability"] = "over-range"
        if oid.type.startswith("analog"):
            unit = schema.unit if schema is not None else None
            kwargs["units"] = _UNIT_NAMES.get(unit or "", "no-units")
            kwargs["covIncrement"] = cov if cov is not None else 0.1
        if oid.type.startswith("multi-state"):
            states = max(len(schema.enum) if schema is not None else 0, 1)
            kwargs["numberOfStates"] = states
            kwargs["stateText"] = [
                m.label for m in (schema.enum if schema is not None else ())
            ] or ["state 1"]
            kwargs["presentValue"] = int(kwargs["presentValue"]) or 1
        if oid.type.startswith("binary"):
            kwargs["presentValue"] = "inactive"
        return cls(**kwargs)

    async def start(self) -> None:
        device = DeviceObject(
            objectIdentifier=("device", self.device_instance),
            objectName=f"{self.model.name.split('/')[-1]}-{self.device_instance}",
            vendorIdentifier=999,
            segmentationSupported="segmented-both",
            maxApduLengthAccepted=1476,
        )
        port = NetworkPortObject(
            self.address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
        )
        if self.bbmd:
            port.bacnetIPMode = IPMode.bbmd
            port.bbmdAcceptFDRegistrations = True
            port.bbmdForeignDeviceTable = []
            port.bbmdBroadcastDistributionTable = [BDTEntry(self.address)]
        self.objects = {
            oid: self._make_object(oid, spec) for oid, spec in sorted(self._specs.items())
        }
        self._base = {
            oid: float(obj.presentValue)
            for oid, obj in self.objects.items()
            if oid.type == "analog-input"
        }
        self.app = _Device.from_object_list([device, port, *self.objects.values()])
        self.app.reject_rpm = self.reject_rpm
        self.app.reject_cov = self.reject_cov
        await wait_bound(self.app, 10.0, self.address)

    def step(self) -> None:
        """Move every analog input a little (a slow sine around its starting value)."""
        self._ticks += 1
        for oid, base in self._base.items():
            self.objects[oid].presentValue = base + math.sin(self._ticks / 5 + oid.instance)

    def close(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Serve (after :meth:`start`) until ``stop`` is set, stepping every ``interval_s``."""
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), interval_s)
                except TimeoutError:
                    self.step()
        finally:
            self.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options (shared with ``edge-agent simulate bacnet``)."""
    parser.add_argument("--address", default="127.0.0.1:47808", help="host:port to serve on")
    parser.add_argument("--device-instance", type=int, default=None)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between changes")
    parser.add_argument("--reject-rpm", action="store_true", help="reject ReadPropertyMultiple")
    parser.add_argument("--reject-cov", action="store_true", help="reject SubscribeCOV")
    parser.add_argument("--fault", action="append", default=[], help="object with a fault")
    parser.add_argument(
        "--bbmd", action="store_true", help="also act as a BBMD accepting foreign devices"
    )


async def serve(model: ThingModel, args: argparse.Namespace) -> int:
    """Run the simulator of ``args`` until SIGINT/SIGTERM."""
    sim = BacnetSimulator(
        model,
        args.address,
        args.device_instance,
        reject_rpm=args.reject_rpm,
        reject_cov=args.reject_cov,
        faults=args.fault,
        bbmd=args.bbmd,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await sim.start()
    print(
        f"bacnet simulator: device {sim.device_instance} listening on {sim.address} "
        f"({len(sim.objects)} objects)",
        flush=True,
    )
    await sim.run(args.interval, stop)
    return 0


def spawn(
    model_path: str | os.PathLike[str],
    address: str,
    device_instance: int,
    *options: str,
    prefix: Sequence[str] = (),
    ready_timeout_s: float = 20.0,
) -> subprocess.Popen[str]:
    """Start the simulator in its own process (after ``prefix``, e.g. ``ip netns exec NS``)
    and return once it listens; raises RuntimeError with its output if it does not."""
    command = [
        *prefix,
        sys.executable,
        "-m",
        "protocol_adapters.bacnet.simulator",
        "--model",
        str(model_path),
        "--address",
        address,
        "--device-instance",
        str(device_instance),
        *options,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], ready_timeout_s)
    line = proc.stdout.readline() if ready else ""
    if "listening" not in line:
        try:
            rest = proc.communicate(timeout=5)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[0]
        raise RuntimeError(f"BACnet simulator did not start: {line}{rest}")
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop a spawned simulator (SIGTERM, then SIGKILL)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    from thing_models.errors import ThingModelError
    from thing_models.yaml_format import load_model_file

    parser = argparse.ArgumentParser(prog="bacnet-simulator")
    parser.add_argument("--model", required=True)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(serve(load_model_file(args.model), args))
    except (BacnetError, ThingModelError) as exc:
        print(f"bacnet-simulator: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
