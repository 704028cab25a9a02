#!/usr/bin/env python3
"""Python peer for cross-process / cross-language shared-memory ring tests.

  ring_peer.py consume --shm NAME --ring I --count N --seed S --max-len L [--timeout SEC] [--bell FD]
      Read N messages, verify each byte and the order against the test stream.
      Prints "OK count=N bytes=B" (exit 0), or one "FAIL ..." line (exit 1).
      --bell: the producer rings the eventfd FD (inherited) instead of the futex; wait
      on it as the orchestrator does (BellReader), and print "bell rung=K" on stderr.
  ring_peer.py produce --shm NAME --ring I --count N --seed S --max-len L [--timeout SEC]
                       [--bell FD] [--pause-every M]
      Write the stream (blocking while full).  Prints "OK count=N bytes=B".
      --bell: wake the consumer by writing the eventfd FD (Ring's bell).  --pause-every:
      sleep 5 ms after every M messages (the consumer runs dry and goes to sleep).
  ring_peer.py echo --shm NAME [--timeout SEC]
      Read ring 0, write every payload unchanged to ring 1, until an empty payload
      (echoed too).  Prints "OK count=N bytes=B" (count includes the empty one).
  ring_peer.py create --shm NAME --capacity C [--rings R]
  ring_peer.py unlink --shm NAME

--timeout bounds each single wait (not the whole run); default: wait forever.
Exit codes: 0 OK, 1 FAIL (data/order/timeout/ring error), 2 usage.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from aetherless.ring import (  # noqa: E402
    CorruptedData,
    LayoutMismatch,
    MessageTooLarge,
    Region,
    RingError,
    RingPoisoned,
    RingTimeout,
    _fence,
    unlink_shm,
)
from aetherless.teststream import TestStream, first_difference  # noqa: E402


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class BellReader:
    """Reads a ring whose producer has a bell (an eventfd) the way the orchestrator reads the
    response ring (its event loop watches the bell in epoll): no spin, no futex. When the
    ring is empty: consumer_sleeping = 1, full fence, look again, then wait for the bell,
    read its counter (8 bytes), consumer_sleeping = 0 and read the ring. RingTimeout when
    no bell comes within ``timeout``, so a producer that futex-woke instead fails, even if
    its record is there by then. ``rung``: bells read."""

    def __init__(self, ring, bell: int):
        self.ring = ring
        self.bell = bell
        self.rung = 0

    def read(self, timeout: float | None = None) -> bytes:
        ring = self.ring
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data = ring.try_read()
            if data is not None:
                return data
            ring._consumer_sleeping.value = 1
            _fence()
            try:
                data = ring.try_read()  # published before the producer could see consumer_sleeping
                if data is not None:
                    return data
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                # No bell: a timeout, even if a record came meanwhile (woken some other way,
                # the orchestrator would not have looked).
                if not select.select([self.bell], [], [], remaining)[0]:
                    raise RingTimeout(f"ring {ring.index}: no bell within {timeout}s")
                try:
                    os.read(self.bell, 8)
                    self.rung += 1
                except BlockingIOError:  # read by another reader first (a non-blocking bell)
                    pass
            finally:
                ring._consumer_sleeping.value = 0


def cmd_consume(a) -> int:
    stream = TestStream(a.seed, a.max_len)
    with Region(a.shm) as region:
        ring = region.ring(a.ring)
        bell = None if a.bell is None else BellReader(ring, a.bell)
        read = ring.read if bell is None else bell.read
        timeout = a.timeout
        total = 0
        for i in range(a.count):
            idx, length, start = stream.next_spec()
            try:
                got = read(timeout)
            except RingTimeout:
                _out(f"FAIL timeout index={i} received={i} bytes={total}")
                return 1
            except CorruptedData as e:
                _out(
                    f"FAIL corrupted index={i} offset={e.offset} stored_crc=0x{e.stored_crc:08x} "
                    f"computed_crc=0x{e.computed_crc:08x} received={i} bytes={total}"
                )
                return 1
            except RingPoisoned as e:
                _out(f"FAIL poisoned index={i} offset={e.offset} len={e.length} received={i} bytes={total}")
                return 1
            expected = stream.payload(idx, length, start)
            if got != expected:
                off = first_difference(got, expected)
                _out(
                    f"FAIL mismatch index={i} offset={off} expected_len={len(expected)} "
                    f"got_len={len(got)} received={i} bytes={total}"
                )
                return 1
            total += length
        if bell is not None:
            sys.stderr.write(f"bell rung={bell.rung}\n")
        _out(f"OK count={a.count} bytes={total}")
        return 0


def cmd_produce(a) -> int:
    stream = TestStream(a.seed, a.max_len)
    with Region(a.shm) as region:
        ring = region.ring(a.ring, bell=a.bell)
        write = ring.write
        timeout = a.timeout
        total = 0
        for i in range(a.count):
            if a.pause_every and i and i % a.pause_every == 0:
                time.sleep(0.005)
            msg = stream.next_message()
            try:
                write(msg, timeout)
            except RingTimeout:
                _out(f"FAIL timeout index={i} sent={i} bytes={total}")
                return 1
            except MessageTooLarge as e:
                _out(f"FAIL too-large index={i} size={e.size} max_payload={e.max_payload}")
                return 1
            except RingPoisoned as e:
                _out(f"FAIL poisoned index={i} offset={e.offset} len={e.length} sent={i} bytes={total}")
                return 1
            total += len(msg)
        _out(f"OK count={a.count} bytes={total}")
        return 0


def cmd_echo(a) -> int:
    with Region(a.shm) as region:
        if region.ring_count < 2:
            _out(f"FAIL ring_count={region.ring_count} (echo needs 2 rings)")
            return 1
        rx = region.ring(0)
        tx = region.ring(1)
        count = total = 0
        while True:
            try:
                msg = rx.read(a.timeout)
                tx.write(msg, a.timeout)
            except RingError as e:
                _out(f"FAIL {type(e).__name__} after count={count}: {e}")
                return 1
            count += 1
            total += len(msg)
            if not msg:
                _out(f"OK count={count} bytes={total}")
                return 0


def cmd_create(a) -> int:
    Region.create(a.shm, a.capacity, a.rings).close()
    _out(f"OK created {a.shm} capacity={a.capacity} rings={a.rings}")
    return 0


def cmd_unlink(a) -> int:
    unlink_shm(a.shm, missing_ok=True)
    _out(f"OK unlinked {a.shm}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def stream_args(sp):
        sp.add_argument("--shm", required=True)
        sp.add_argument("--ring", type=int, required=True)
        sp.add_argument("--count", type=int, required=True)
        sp.add_argument("--seed", type=lambda s: int(s, 0), required=True)
        sp.add_argument("--max-len", dest="max_len", type=int, required=True)
        sp.add_argument("--timeout", type=float, default=None)
        sp.add_argument("--bell", type=int, default=None)

    stream_args(sub.add_parser("consume"))
    stream_args(sp := sub.add_parser("produce"))
    sp.add_argument("--pause-every", dest="pause_every", type=int, default=0)
    sp = sub.add_parser("echo")
    sp.add_argument("--shm", required=True)
    sp.add_argument("--timeout", type=float, default=None)
    sp = sub.add_parser("create")
    sp.add_argument("--shm", required=True)
    sp.add_argument("--capacity", type=int, required=True)
    sp.add_argument("--rings", type=int, default=2)
    sp = sub.add_parser("unlink")
    sp.add_argument("--shm", required=True)
    a = p.parse_args(argv)
    try:
        return {
            "consume": cmd_consume,
            "produce": cmd_produce,
            "echo": cmd_echo,
            "create": cmd_create,
            "unlink": cmd_unlink,
        }[a.cmd](a)
    except (LayoutMismatch, RingError, OSError, ValueError, IndexError) as e:
        _out(f"FAIL {type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
