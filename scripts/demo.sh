#!/usr/bin/env bash
# The main job: the thing-model tools on the example models, a local registry that the examples
# are published to, a simulated Modbus meter, then `edge-agent demo`: registry, simulated devices
# and the agent together, with live values read back from the registry (Ctrl-C stops it).
# Installs what it needs first (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
# The demo's MQTT device and the agent's local MQTT stream need a mosquitto broker (the demo
# starts its own on 127.0.0.1); without it the demo runs on and says what it skipped.
if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    echo "demo.sh: installing the Debian package mosquitto (the demo's MQTT broker)" >&2
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
        sudo_cmd=(sudo)
    fi
    { "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends mosquitto >/dev/null; } \
        || echo "demo.sh: could not install mosquitto; the demo skips its MQTT parts" >&2
fi
out=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$out"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Validate every example model (errors would show as file:line:column)"
thing-model validate examples/models/*.yaml

step "A broken model: every problem at once, with 'did you mean'"
thing-model validate examples/broken/broken-meter.yaml || echo "(exit code $? as expected)"

step "Convert the energy meter to a W3C WoT Thing Description (Modbus forms)"
thing-model convert examples/models/energy-meter-3p.yaml --to wot-td -o "$out/meter.td.json"
python -c "import json,sys; td=json.load(open(sys.argv[1])); print('properties:', ', '.join(td['properties'])); f=td['properties']['voltage_a']['forms'][0]; print('voltage_a form:', json.dumps(f))" "$out/meter.td.json"

step "Convert it to Alibaba TSL (what TSL cannot hold is named) and back to YAML"
thing-model convert examples/models/energy-meter-3p.yaml --to tsl -o "$out/meter.tsl.json" || true
thing-model convert "$out/meter.tsl.json" --to yaml | head -n 20

step "Import the third-party conformance files (Alibaba TSL, W3C WoT)"
for f in ../shared/conformance/thing-models/*; do
    thing-model validate "$f" 2>&1 | tail -n 3 || true
done

step "Diff two versions of a model: the declared bump must cover the changes"
thing-model diff examples/versions/energy-meter-3p-1.0.0.yaml examples/versions/energy-meter-3p-1.1.0.yaml || echo "(exit code $?: declared bump too small)"

step "Validate telemetry against the compiled model"
python - <<'PY'
from thing_models.telemetry import compile_validator
from thing_models.yaml_format import load_model_file

validator = compile_validator(load_model_file("examples/models/energy-meter-3p.yaml"))
report = {"voltage_a": 231.4, "frequency": 50.01, "tariff": 2}
print("good report:", validator.check_properties(report) or "no issues")
bad = {"voltage_a": 900.0, "tariff": 7, "relay_closed": 1, "unknown_point": 3}
for issue in validator.check_properties(bad):
    print("  issue:", issue)
PY

step "The canonical message envelope (JSON Schema excerpt)"
thing-model schema | head -n 15

step "Start a local registry (SQLite, TLS with a CA of its own) and publish the example models to it"
cloud-registry ca init --dir "$out/ca"
cloud-registry ca server-cert --dir "$out/ca" --host 127.0.0.1
# A vendor's API key (stored hashed; shown once) for publishing over one-way TLS.
key=$(cloud-registry apikeys add demo-vendor --site demo --scope admin,read-models \
    --db "sqlite:///$out/registry.db" | tail -n 1)
cloud-registry serve --listen 127.0.0.1:0 --enroll-listen 127.0.0.1:0 --ca-dir "$out/ca" \
    --db "sqlite:///$out/registry.db" 2>"$out/registry.log" &
pids+=($!)
for _ in $(seq 100); do
    addr=$(sed -n 's/.*one-way TLS) listening on \([0-9.]*:[0-9]*\).*/\1/p' "$out/registry.log" | head -n 1)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { cat "$out/registry.log"; exit 1; }
echo "registry: mTLS for edges and integrators, one-way TLS + API keys on $addr"
tls=(--registry "$addr" --tls-ca "$out/ca/root.pem" --api-key "$key")
# device-health first: other models include it as a component
thing-model publish examples/models/device-health.yaml "${tls[@]}"
for f in examples/models/*.yaml; do
    [ "$f" = examples/models/device-health.yaml ] || thing-model publish "$f" "${tls[@]}"
done
cloud-registry "${tls[@]}" models list

step "A version bump smaller than the changes require is refused by the registry"
thing-model publish examples/versions/energy-meter-3p-1.1.0.yaml "${tls[@]}" \
    || echo "(exit code $?: refused, as it should be)"

step "A simulated Modbus meter (edge-agent simulate modbus), read once by the Modbus driver"
edge-agent simulate modbus --model examples/models/energy-meter-3p.yaml --port 0 >"$out/sim.log" &
pids+=($!)
for _ in $(seq 100); do
    port=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out/sim.log" | head -n 1)
    [ -n "$port" ] && break
    sleep 0.1
done
python - "$port" <<'PY'
import asyncio, sys
from protocol_adapters.modbus.driver import ModbusDriver
from thing_models.yaml_format import load_model_file

model = load_model_file("examples/models/energy-meter-3p.yaml")

async def read() -> None:
    async with ModbusDriver("127.0.0.1", int(sys.argv[1]), model.bindings.modbus, model) as driver:
        for name, decoded in (await driver.read_all()).items():
            print(f"  {name:16} {decoded.value!r:>24}  {decoded.quality}")

asyncio.run(read())
PY

step "The full loop: edge-agent demo (registry; Modbus, BACnet, MQTT and CoAP devices; agent; local MQTT stream; Ctrl-C stops it)"
# DEMO_DURATION=SECONDS ends it by itself (scripts, CI); by default it runs until Ctrl-C.
if [ -n "${DEMO_DURATION:-}" ]; then
    edge-agent demo --duration "$DEMO_DURATION"
else
    edge-agent demo
fi
