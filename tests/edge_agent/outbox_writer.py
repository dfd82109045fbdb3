"""A process that writes to an outbox until it is killed, for the kill -9 test::

    python -m tests.edge_agent.outbox_writer DB FIRST_N SEED [--uplink]

Appends batches of numbered messages (``params.n`` = FIRST_N, FIRST_N + 1, ...; sizes 1-40,
devices ``d0``-``d4``, every 7th an event) and prints, after each commit, one line flushed:

* ``C <first_id> <last_id> <first_n>``: an append committed;
* with ``--uplink``, also ``P <seq> <first_id> <last_id> <count>`` for each pending batch found
  at start (then acknowledged: ``K <seq>``), ``A <seq> <first_id> <last_id>`` for a batch
  assigned, ``K <seq>`` for a batch acknowledged (the one assigned before the last).

A line is printed only after its transaction committed, so the test may rely on every line it
reads. Stops by itself after 100,000 appends.
"""

from __future__ import annotations

import random
import sys

from edge_agent.outbox import Outbox
from thing_models.messages import Message, MessageKind

MODEL = "test.acme/counter@1.0.0"


def message(n: int) -> Message:
    device = f"d{n % 5}"
    if n % 7 == 0:
        return Message(
            id=f"m{n}",
            kind=MessageKind.EVENT,
            name="alarm",
            model=MODEL,
            device_id=device,
            ts_ms=1_700_000_000_000 + n,
            params={"n": n},
        )
    return Message(
        id=f"m{n}",
        kind=MessageKind.PROPERTY_REPORT,
        model=MODEL,
        device_id=device,
        ts_ms=1_700_000_000_000 + n,
        params={"n": n, "temperature": n / 10},
    )


def main(argv: list[str]) -> int:
    path, first_n, seed = argv[0], int(argv[1]), int(argv[2])
    uplink = "--uplink" in argv[3:]
    rng = random.Random(seed)
    out = sys.stdout
    with Outbox(path, max_bytes=1 << 30, max_age_s=10**9) as outbox:
        if uplink:
            for batch in outbox.pending_batches():
                assert batch.sequence is not None
                print(f"P {batch.sequence} {batch.first_id} {batch.last_id}", end="", file=out)
                print(f" {len(batch.messages)}", file=out, flush=True)
                outbox.ack_sequence(batch.sequence)
                print(f"K {batch.sequence}", file=out, flush=True)
        n = first_n
        in_flight: list[int] = []
        for round_ in range(100_000):
            size = rng.randint(1, 40)
            last = outbox.append([message(k) for k in range(n, n + size)])
            print(f"C {last - size + 1} {last} {n}", file=out, flush=True)
            n += size
            if uplink and round_ % 3 == 0:
                fresh = outbox.next_batch(rng.randint(1, 30))
                if fresh is not None:
                    seq = outbox.assign_sequence(fresh)
                    print(f"A {seq} {fresh.first_id} {fresh.last_id}", file=out, flush=True)
                    in_flight.append(seq)
                if len(in_flight) > 1:
                    done = in_flight.pop(0)
                    outbox.ack_sequence(done)
                    print(f"K {done}", file=out, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
