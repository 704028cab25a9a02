"""Tests of sdk/python/aetherless/ring.py and teststream.py against docs/shm-layout.md.

Run from the repository root:
    python3 -m unittest discover -s sdk/python/tests -v
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SDK = os.path.normpath(os.path.join(HERE, ".."))
PEER = os.path.join(SDK, "tools", "ring_peer.py")
sys.path.insert(0, SDK)
sys.path.insert(0, os.path.dirname(PEER))

from aetherless.ring import (  # noqa: E402
    IMPLEMENTATION,
    LAYOUT_VERSION,
    MAGIC,
    WRAP_MARKER,
    CorruptedData,
    LayoutMismatch,
    MessageTooLarge,
    Region,
    Ring,
    RingPoisoned,
    RingTimeout,
    shm_path,
    unlink_shm,
)
from aetherless.teststream import TestStream, first_difference, splitmix64  # noqa: E402
from ring_peer import BellReader  # noqa: E402

KIB = 1024
_counter = itertools.count()


def unique_name(tag: str) -> str:
    return f"/aetherless-pytest-{tag}-{os.getpid()}-{next(_counter)}"


def rec_size(n: int) -> int:
    return 8 + ((n + 7) & ~7)


def _pattern(n: int, fill: int) -> bytes:
    base = bytes(((fill * 31 + k * 7) & 0xFF) for k in range(256))
    return (base * (n // 256 + 1))[:n]


class RegionCase(unittest.TestCase):
    """Creates one region per test and always closes and unlinks it."""

    capacity = 64 * KIB
    rings = 2

    def setUp(self):
        self.name = unique_name(type(self).__name__)
        self.region = Region.create(self.name, self.capacity, self.rings)
        self.addCleanup(unlink_shm, self.name, True)
        self.addCleanup(self.region.close)
        self.ring = self.region.ring(0)
        self.mm = self.region.mmap

    def position(self, ring: Ring, pos: int) -> None:
        """Move an idle, empty ring to absolute position ``pos`` (test helper)."""
        self.assertEqual(ring.head, ring.tail)
        ring._head.value = pos
        ring._tail.value = pos

    def u32_at_pos(self, ring: Ring, pos: int) -> int:
        return struct.unpack_from("<I", self.mm, ring.data_offset(pos))[0]


# --------------------------------------------------------------------------- region / layout


class TestRegionLayout(RegionCase):
    def test_header_bytes_and_mode(self):
        st = os.stat(shm_path(self.name))
        self.assertEqual(st.st_mode & 0o777, 0o600)
        cap = self.capacity
        stride = 256 + cap
        self.assertEqual(st.st_size, 64 + 2 * stride)
        hdr = bytes(self.mm[0:64])
        self.assertEqual(hdr[0:8], b"AETHSHM1")
        self.assertEqual(struct.unpack_from("<IIQQ", hdr, 8), (1, 2, cap, stride))
        self.assertEqual(struct.unpack_from("<I", hdr, 32), (os.getpid(),))  # owner_pid
        self.assertEqual(hdr[36:64], bytes(28))
        # Ring headers all zero; ring i at 64 + i * stride.
        for i in range(2):
            base = 64 + i * stride
            self.assertEqual(bytes(self.mm[base : base + 256]), bytes(256))
        r1 = self.region.ring(1)
        self.assertEqual(r1.data_offset(0), 64 + stride + 256)

    def test_reopen(self):
        with Region(self.name, ring_count=2, ring_capacity=self.capacity) as other:
            self.assertEqual(other.max_payload, self.capacity // 2 - 8)
            w = other.ring(0)
            self.assertTrue(w.try_write(b"hello"))
            self.assertEqual(self.ring.try_read(), b"hello")

    def test_create_exclusive(self):
        with self.assertRaises(FileExistsError):
            Region.create(self.name, self.capacity)

    def _reopen_expect(self, field, expected, found):
        with self.assertRaises(LayoutMismatch) as cm:
            Region(self.name)
        e = cm.exception
        self.assertEqual(e.field, field)
        self.assertEqual(e.expected, expected)
        self.assertEqual(e.found, found)
        self.assertIn(repr(expected), str(e))
        self.assertIn(repr(found), str(e))
        return e

    def test_wrong_magic(self):
        self.mm[0:8] = b"AETHSHM2"
        self._reopen_expect("magic", MAGIC, b"AETHSHM2")

    def test_wrong_version(self):
        struct.pack_into("<I", self.mm, 8, 2)
        self._reopen_expect("layout_version", LAYOUT_VERSION, 2)

    def test_wrong_stride(self):
        struct.pack_into("<Q", self.mm, 24, self.capacity + 128)
        self._reopen_expect("ring_stride", self.capacity + 256, self.capacity + 128)

    def test_bad_capacity(self):
        struct.pack_into("<Q", self.mm, 16, self.capacity + 8)
        with self.assertRaises(LayoutMismatch) as cm:
            Region(self.name)
        self.assertEqual(cm.exception.field, "ring_capacity")
        self.assertEqual(cm.exception.found, self.capacity + 8)

    def test_wrong_ring_count(self):
        with self.assertRaises(LayoutMismatch) as cm:
            Region(self.name, ring_count=3)
        self.assertEqual((cm.exception.field, cm.exception.expected, cm.exception.found), ("ring_count", 3, 2))
        struct.pack_into("<I", self.mm, 12, 3)  # header claims 3 rings, object holds 2
        self._reopen_expect("object size", 64 + 3 * (256 + self.capacity), 64 + 2 * (256 + self.capacity))

    def test_wrong_size(self):
        os.truncate(shm_path(self.name), 64 + 2 * (256 + self.capacity) + 4096)
        self._reopen_expect("object size", 64 + 2 * (256 + self.capacity), 64 + 2 * (256 + self.capacity) + 4096)

    def test_tiny_object(self):
        name = unique_name("tiny")
        with open(shm_path(name), "wb") as f:
            f.write(b"AETH")
        self.addCleanup(unlink_shm, name, True)
        with self.assertRaises(LayoutMismatch) as cm:
            Region(name)
        self.assertEqual(cm.exception.field, "object size")

    def test_missing_object(self):
        with self.assertRaises(FileNotFoundError):
            Region(unique_name("missing"))

    def test_bad_name(self):
        for bad in ("no-slash", "/a/b", "/"):
            with self.assertRaises(ValueError):
                Region(bad)

    def test_close_releases_exports(self):
        name = unique_name("close")
        r = Region.create(name, self.capacity)
        self.addCleanup(unlink_shm, name, True)
        rings = [r.ring(0), r.ring(1), r.ring(0)]
        rings[0].try_write(b"x")
        r.close()  # must not raise BufferError ("cannot close exported pointers exist")
        self.assertIsNone(r.mmap)


# --------------------------------------------------------------------------- basic ring behaviour


class TestRingBasics(RegionCase):
    def test_empty(self):
        self.assertIsNone(self.ring.try_read())
        t0 = time.monotonic()
        with self.assertRaises(RingTimeout):
            self.ring.read(timeout=0.05)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertEqual(self.ring.head, 0)
        self.assertEqual(self.ring.tail, 0)

    def test_roundtrip_small_sizes_and_padding(self):
        r = self.ring
        pos = 0
        for n in range(0, 40):
            p = _pattern(n, n)
            self.assertTrue(r.try_write(p))
            off = r.data_offset(pos)
            ln, crc = struct.unpack_from("<II", self.mm, off)
            self.assertEqual((ln, crc), (n, zlib.crc32(p)))
            self.assertEqual(bytes(self.mm[off + 8 : off + 8 + n]), p)
            pad = rec_size(n) - 8 - n
            self.assertEqual(bytes(self.mm[off + 8 + n : off + 8 + n + pad]), bytes(pad))
            pos += rec_size(n)
            self.assertEqual(r.head, pos)
            self.assertEqual(r.head % 8, 0)
        for n in range(0, 40):
            self.assertEqual(r.try_read(), _pattern(n, n))
        self.assertIsNone(r.try_read())
        self.assertEqual(r.tail, pos)

    def test_accepts_buffer_types(self):
        r = self.ring
        r.try_write(bytearray(b"abc"))
        r.try_write(memoryview(b"defgh"))
        r.try_write(memoryview(struct.pack("<4I", 1, 2, 3, 4)).cast("I"))
        self.assertEqual(r.try_read(), b"abc")
        self.assertEqual(r.try_read(), b"defgh")
        self.assertEqual(r.try_read(), struct.pack("<4I", 1, 2, 3, 4))

    def test_full_ring_exact(self):
        r = self.ring
        cap = self.capacity
        rec = cap // 8
        msgs = [_pattern(rec - 8, k) for k in range(9)]
        for k in range(8):
            self.assertTrue(r.try_write(msgs[k]), k)
        self.assertEqual(r.used(), cap)
        self.assertFalse(r.try_write(msgs[8]))
        self.assertFalse(r.try_write(b""))  # even an 8-byte record does not fit
        self.assertEqual(r.head, cap)
        with self.assertRaises(RingTimeout):
            r.write(b"", timeout=0.05)
        self.assertEqual(r.try_read(), msgs[0])
        self.assertTrue(r.try_write(msgs[8]))
        self.assertFalse(r.try_write(b""))
        for k in range(1, 9):
            self.assertEqual(r.try_read(), msgs[k])
        self.assertIsNone(r.try_read())
        self.assertEqual(r.head, r.tail)
        self.assertEqual(r.head, 9 * rec)

    def test_full_ring_small_messages(self):
        r = self.ring
        k = 0
        while r.try_write(_pattern(13, k)):
            k += 1
        self.assertEqual(k, self.capacity // rec_size(13))
        for j in range(k):
            self.assertEqual(r.try_read(), _pattern(13, j))
        self.assertIsNone(r.try_read())

    def test_max_size_message(self):
        r = self.ring
        mp = self.capacity // 2 - 8
        self.assertEqual(r.max_payload, mp)
        big = _pattern(mp, 3)
        self.assertTrue(r.try_write(big))
        self.assertEqual(r.used(), self.capacity // 2)
        self.assertTrue(r.try_write(big))  # two max records fill the ring exactly
        self.assertFalse(r.try_write(b""))
        self.assertEqual(r.try_read(), big)
        self.assertEqual(r.try_read(), big)

    def test_max_size_fits_at_every_offset_once_drained(self):
        r = self.ring
        mp = r.max_payload
        big = _pattern(mp, 5)
        for off in range(0, self.capacity, 8):
            self.position(r, 10 * self.capacity + off)
            self.assertTrue(r.try_write(big), off)
            got = r.try_read()
            self.assertEqual(len(got), mp)
            self.assertTrue(got == big, off)

    def test_oversize_message(self):
        r = self.ring
        r.try_write(b"first")
        snapshot = bytes(self.mm)
        head = r.head
        mp = r.max_payload
        for n in (mp + 1, mp + 8, self.capacity, 10 * self.capacity):
            with self.assertRaises(MessageTooLarge) as cm:
                r.try_write(bytes(n))
            self.assertEqual((cm.exception.size, cm.exception.max_payload), (n, mp))
            with self.assertRaises(MessageTooLarge):
                r.write(bytes(n), timeout=0.01)
        self.assertEqual(r.head, head)
        self.assertEqual(bytes(self.mm), snapshot)  # nothing written at all
        self.assertEqual(r.try_read(), b"first")
        self.assertIsNone(r.try_read())

    def test_large_positions(self):
        # head/tail are u64 byte counters; make sure nothing truncates to 32 bits.
        r = self.ring
        for base in (2**31 - 8, 2**32 - 8, 2**32 + 4096, 2**40 + 8, 2**63 - self.capacity):
            self.position(r, base - base % 8)
            for n in (0, 1, 1000, 30000, r.max_payload):
                self.assertTrue(r.try_write(_pattern(n, n)))
                self.assertEqual(r.try_read(), _pattern(n, n))

    def test_torn_record_is_invisible(self):
        # Simulates a producer killed in step 5 before its head store: the bytes are
        # in the data area but head does not cover them.
        r = self.ring
        p = b"torn" * 10
        off = r.data_offset(r.head)
        self.mm[off + 8 : off + 8 + len(p)] = p
        struct.pack_into("<II", self.mm, off, len(p), zlib.crc32(p))
        self.assertIsNone(r.try_read())
        self.assertEqual(r.tail, 0)


# --------------------------------------------------------------------------- wrap-around


class TestWrapAround(RegionCase):
    capacity = 64 * KIB

    def check_write(self, r, pos, n, expect_marker):
        cap = self.capacity
        self.position(r, pos)
        off = pos % cap
        contig = cap - off
        p = _pattern(n, off // 8)
        self.assertTrue(r.try_write(p), (off, n))
        rec = rec_size(n)
        if expect_marker:
            self.assertEqual(self.u32_at_pos(r, pos), WRAP_MARKER, (off, n))
            self.assertEqual(r.head, pos + contig + rec)
            rec_pos = pos + contig
            self.assertEqual(rec_pos % cap, 0)
        else:
            self.assertEqual(r.head, pos + rec)
            rec_pos = pos
        self.assertEqual(self.u32_at_pos(r, rec_pos), n)
        got = r.try_read()
        self.assertTrue(got == p, (off, n))
        self.assertEqual(r.tail, r.head)
        self.assertIsNone(r.try_read())

    def test_record_ends_exactly_at_end(self):
        cap = self.capacity
        # head 8 bytes before the end: a 0-byte payload (8-byte record) fits exactly.
        self.check_write(self.ring, 5 * cap - 8, 0, expect_marker=False)
        self.assertEqual(self.ring.head % cap, 0)
        # head 1000 bytes before the end: 992-byte payload ends exactly at the end.
        self.check_write(self.ring, 7 * cap - 1000, 992, expect_marker=False)
        self.assertEqual(self.ring.head % cap, 0)

    def test_one_byte_over(self):
        cap = self.capacity
        # 1 byte more than fits -> (padded) record 8 bytes over -> wrap marker.
        self.check_write(self.ring, 5 * cap - 8, 1, expect_marker=True)
        self.check_write(self.ring, 7 * cap - 1000, 993, expect_marker=True)

    def test_every_offset(self):
        """For every 8-aligned head offset: records that end 8 before, exactly at, and 8
        past the end of the data area (the last needs a wrap marker)."""
        cap = self.capacity
        r = self.ring
        mp = r.max_payload
        for off in range(0, cap, 8):
            contig = cap - off
            pos = 3 * cap + off
            for rec, marker in ((contig - 8, False), (contig, False), (contig + 8, True)):
                if rec < 8:
                    continue
                # largest and smallest payload with that record size
                for n in {rec - 8, max(rec - 15, 0)}:
                    if n > mp:
                        continue
                    self.check_write(r, pos, n, marker)

    def test_wrap_marker_when_only_header_room(self):
        cap = self.capacity
        r = self.ring
        self.position(r, cap - 8)  # contig == 8
        self.assertTrue(r.try_write(b"abcdefgh"))  # 16-byte record: marker at cap-8
        self.assertEqual(self.u32_at_pos(r, cap - 8), WRAP_MARKER)
        self.assertEqual(r.head, cap + 16)
        self.assertEqual(r.try_read(), b"abcdefgh")

    def test_wrap_needs_room_for_padding_too(self):
        # need = contig + rec: a record that fits in the free space, but not together
        # with the padding before the end of the data area, must be refused.
        cap = self.capacity
        r = self.ring
        self.position(r, 3072)
        first, second = _pattern(cap // 2 - 8, 1), _pattern(cap // 2 - 4096 - 8, 2)
        self.assertTrue(r.try_write(first))
        self.assertTrue(r.try_write(second))
        self.assertEqual(r.head % cap, cap - 1024)  # contig = 1024
        self.assertEqual(cap - r.used(), 4096)  # free = 4096
        third = _pattern(4000 - 8, 3)  # rec 4000 <= free, but 1024 + 4000 > free
        self.assertFalse(r.try_write(third))
        self.assertEqual(r.head % cap, cap - 1024)
        self.assertEqual(r.try_read(), first)
        self.assertTrue(r.try_write(third))
        self.assertEqual(self.u32_at_pos(r, r.tail + len(second) + 8), WRAP_MARKER)
        self.assertEqual(r.try_read(), second)
        self.assertEqual(r.try_read(), third)
        self.assertIsNone(r.try_read())

    def test_stream_through_small_ring(self):
        # Many wraps with the shared test stream, interleaving writes and reads.
        r = self.ring
        prod = TestStream(7, min(r.max_payload, 65536))
        cons = TestStream(7, prod.max_len)
        rnd = random.Random(1)
        got = 0
        for _ in range(3000):
            m = prod.next_message()
            while not r.try_write(m):  # full: drain one and retry
                self.assertEqual(r.try_read(), cons.next_message())
                got += 1
            for _ in range(rnd.randint(0, 2)):
                x = r.try_read()
                if x is None:
                    break
                self.assertEqual(x, cons.next_message())
                got += 1
        while (x := r.try_read()) is not None:
            self.assertEqual(x, cons.next_message())
            got += 1
        self.assertEqual(got, 3000)
        self.assertGreater(r.head // self.capacity, 10)


# --------------------------------------------------------------------------- corruption


class TestCorruption(RegionCase):
    def test_flipped_payload_byte(self):
        r = self.ring
        a, b = _pattern(100, 1), _pattern(50, 2)
        r.try_write(a)
        r.try_write(b)
        off = r.data_offset(0)
        self.mm[off + 8 + 42] ^= 0x01
        flipped = bytearray(a)
        flipped[42] ^= 0x01
        with self.assertRaises(CorruptedData) as cm:
            r.try_read()
        e = cm.exception
        self.assertEqual(e.offset, 0)
        self.assertEqual(e.stored_crc, zlib.crc32(a))
        self.assertEqual(e.computed_crc, zlib.crc32(flipped))
        self.assertIn(f"{e.stored_crc:08x}", str(e))
        self.assertIn(f"{e.computed_crc:08x}", str(e))
        self.assertFalse(r.poisoned)
        self.assertEqual(r.tail, rec_size(100))  # record skipped
        self.assertEqual(r.try_read(), b)  # next message still readable
        self.assertTrue(r.try_write(b"after"))
        self.assertEqual(r.try_read(), b"after")

    def test_flipped_crc_byte_blocking_read(self):
        r = self.ring
        r.try_write(b"payload")
        r.try_write(b"next")
        self.mm[r.data_offset(0) + 5] ^= 0x80
        with self.assertRaises(CorruptedData):
            r.read(timeout=1)
        self.assertEqual(r.read(timeout=1), b"next")

    def _expect_poison(self, r, off, length):
        with self.assertRaises(RingPoisoned) as cm:
            r.try_read()
        self.assertEqual((cm.exception.offset, cm.exception.length), (off, length))
        self.assertTrue(r.poisoned)
        self.assertEqual(struct.unpack_from("<I", self.mm, 64 + 72)[0], 1)  # poisoned word
        # The ring is no longer read.
        with self.assertRaises(RingPoisoned):
            r.try_read()
        with self.assertRaises(RingPoisoned):
            r.read(timeout=0.1)

    def test_length_beyond_max_payload(self):
        r = self.ring
        r.try_write(b"x" * 64)
        struct.pack_into("<I", self.mm, r.data_offset(0), r.max_payload + 1)
        self._expect_poison(r, 0, r.max_payload + 1)

    def test_length_beyond_head(self):
        r = self.ring
        r.try_write(b"x" * 64)
        struct.pack_into("<I", self.mm, r.data_offset(0), 65)  # rec 80 > head 72
        self._expect_poison(r, 0, 65)

    def test_length_past_end_of_data_area(self):
        r = self.ring
        cap = self.capacity
        self.position(r, cap - 64)
        # Fill: 56-byte record at cap-64, then a wrapped one; corrupt the first's len
        r.try_write(bytes(48))
        r.try_write(bytes(4000))
        struct.pack_into("<I", self.mm, r.data_offset(cap - 64), 100)
        self._expect_poison(r, cap - 64, 100)

    def test_wrap_marker_beyond_head(self):
        r = self.ring
        r.try_write(bytes(16))
        struct.pack_into("<I", self.mm, r.data_offset(0), WRAP_MARKER)
        self._expect_poison(r, 0, WRAP_MARKER)

    def test_producer_sees_poison_when_full(self):
        r = self.ring
        r.try_write(bytes(64))
        struct.pack_into("<I", self.mm, r.data_offset(0), 0x7FFFFFFF)
        with self.assertRaises(RingPoisoned):
            r.try_read()
        # Not full yet: writes still succeed (the producer checks poisoned only when full)
        self.assertTrue(r.try_write(bytes(1000)))
        with self.assertRaises(RingPoisoned):
            for _ in range(1000):
                r.try_write(bytes(1000))
        with self.assertRaises(RingPoisoned):
            r.write(bytes(1000), timeout=5)


# --------------------------------------------------------------------------- hostile peer


U64_MAX = (1 << 64) - 1


class TestHostilePeer(RegionCase):
    """Every ring word and byte is the other process's to write.  Whatever it writes,
    this side raises one of the module's RingError types (or times out), never
    struct.error, IndexError or a stall, and never writes outside its data area."""

    def words(self, ring: Ring, head: int, tail: int) -> None:
        ring._head.value = head
        ring._tail.value = tail

    def expect_positions_poison(self, call, ring: Ring, head: int, tail: int):
        with self.assertRaises(RingPoisoned) as cm:
            call()
        e = cm.exception
        self.assertEqual(e.length, 0)
        self.assertIn(f"head {head} and tail {tail} cannot both hold", str(e))
        self.assertTrue(ring.poisoned)
        # Poisoned for good on this side: sane words afterwards change nothing.
        self.words(ring, 0, 0)
        with self.assertRaises(RingPoisoned):
            call()
        return e

    IMPOSSIBLE = [
        (0, 1),  # tail = head + 1
        (0, 8),  # tail ahead of head
        (0, U64_MAX),  # tail = UINT64_MAX
        (3 * 64 * KIB, 0),  # head = tail + 3 * capacity
        (64 * KIB + 8, 0),  # more published than the ring holds
        (5, 5),  # misaligned
        (U64_MAX & ~7, U64_MAX & ~7),  # writing on would overflow 64 bits
    ]

    def test_producer_refuses_impossible_positions(self):
        for index in (0, 1):
            for head, tail in self.IMPOSSIBLE:
                with self.subTest(ring=index, head=head, tail=tail):
                    self.setUp()
                    r = self.region.ring(index)
                    self.words(r, head, tail)
                    before = bytes(self.mm)
                    e = self.expect_positions_poison(lambda: r.try_write(b"x" * 100), r, head, tail)
                    self.assertEqual(e.offset, head % self.capacity)
                    after = bytearray(self.mm)
                    # Only the words this test wrote and the poisoned word changed.
                    base = 64 + index * (256 + self.capacity)
                    after[base : base + 80] = before[base : base + 80]
                    self.assertEqual(bytes(after), before)

    def test_producer_full_ring_then_tail_ahead_of_head(self):
        r = self.ring
        while r.try_write(bytes(1000)):
            pass
        head = r.head
        r._tail.value = head + 8
        self.expect_positions_poison(lambda: r.write(bytes(1000), timeout=5), r, head, head + 8)

    def test_misaligned_head_at_the_end_of_the_last_ring(self):
        # A marker at cap - 2 would need 4 bytes of which 2 lie past the mapping.
        r = self.region.ring(1)
        pos = 10 * self.capacity - 2
        self.words(r, pos, pos)
        self.expect_positions_poison(lambda: r.try_write(b"y" * 100), r, pos, pos)

    def test_consumer_refuses_impossible_positions(self):
        cases = [
            (3 * 64 * KIB, 0),  # head = tail + 3 * capacity
            (64 * KIB + 8, 0),
            (8, 64),  # head behind tail
            (U64_MAX, 0),
            (12, 0),  # misaligned head
            (U64_MAX & ~7, (U64_MAX & ~7) - 8),
            (64 * KIB, 64 * KIB - 2),  # misaligned tail 2 bytes before the end
        ]
        for index in (0, 1):
            for head, tail in cases:
                with self.subTest(ring=index, head=head, tail=tail):
                    self.setUp()
                    r = self.region.ring(index)
                    self.words(r, head, tail)
                    self.expect_positions_poison(r.try_read, r, head, tail)
                    with self.assertRaises(RingPoisoned):
                        r.read(timeout=0.05)

    def test_far_head_and_wrap_marker_at_offset_zero_do_not_spin(self):
        # Before: one try_read skipped a whole ring per round, 2**24 rounds long.
        r = self.ring
        struct.pack_into("<I", self.mm, r.data_offset(0), WRAP_MARKER)
        self.words(r, 1 << 40, 0)
        started = time.monotonic()
        self.expect_positions_poison(r.try_read, r, 1 << 40, 0)
        self.assertLess(time.monotonic() - started, 1.0)

    def test_wrap_marker_where_a_record_fits(self):
        for off in (0, 8, self.capacity // 2):
            with self.subTest(offset=off):
                self.setUp()
                r = self.ring
                self.words(r, self.capacity, off)
                struct.pack_into("<I", self.mm, r.data_offset(off), WRAP_MARKER)
                with self.assertRaises(RingPoisoned) as cm:
                    r.try_read()
                self.assertEqual((cm.exception.offset, cm.exception.length), (off, WRAP_MARKER))
                self.assertTrue(r.poisoned)

    def test_impossible_lengths(self):
        for ln in (0xFFFFFFFE, 0x80000000, self.ring.max_payload + 1):
            with self.subTest(length=ln):
                self.setUp()
                r = self.ring
                self.words(r, self.capacity // 2, 0)
                struct.pack_into("<II", self.mm, r.data_offset(0), ln, 0)
                with self.assertRaises(RingPoisoned) as cm:
                    r.try_read()
                self.assertEqual((cm.exception.offset, cm.exception.length), (0, ln))

    def test_poisoned_word_with_misaligned_tail_at_the_end_of_the_last_ring(self):
        r = self.region.ring(1)
        self.words(r, self.capacity, self.capacity - 2)
        r._poisoned.value = 7
        with self.assertRaises(RingPoisoned):
            r.try_read()
        with self.assertRaises(RingPoisoned):
            while r.try_write(bytes(1000)):
                pass

    def test_garbage_futex_words(self):
        r = self.ring
        for off in (128, 132, 192, 196):
            struct.pack_into("<I", self.mm, 64 + off, 0xFFFFFFFF)
        with self.assertRaises(RingTimeout):
            r.read(timeout=0.05)
        r.write(b"through", timeout=5)
        self.assertEqual(r.read(timeout=5), b"through")
        while r.try_write(bytes(3000)):
            pass
        with self.assertRaises(RingTimeout):
            r.write(bytes(3000), timeout=0.05)

    def test_random_words_and_bytes_raise_only_ring_errors(self):
        """A small seeded fuzz: random head/tail (near each other or not), flags and
        record bytes on both rings; every outcome is data, None, or a RingError."""
        rng = random.Random(13)
        cap = self.capacity
        size = len(self.mm)
        for round_ in range(2000):
            self.mm[64:size] = bytes(size - 64)
            for index in (0, 1):
                base = 64 + index * (256 + cap)
                tail = rng.choice(
                    [
                        0,
                        rng.randrange(1 << 40),
                        rng.randrange(1 << 64),
                        U64_MAX - rng.randrange(64),
                        rng.randrange(1 << 20) * cap - rng.randrange(16),  # just before a wrap
                    ]
                )
                if rng.random() < 0.7:
                    tail &= ~7
                head = rng.choice(
                    [tail, tail + rng.randrange(2 * cap + 64), rng.randrange(1 << 64), tail - 8 * rng.randrange(4)]
                )
                if rng.random() < 0.7:
                    head &= ~7
                head &= U64_MAX
                tail &= U64_MAX
                struct.pack_into("<Q", self.mm, base, head)
                struct.pack_into("<Q", self.mm, base + 64, tail)
                struct.pack_into("<I", self.mm, base + 72, rng.choice([0, 0, 0, 1, 0xFFFFFFFF]))
                for off in (128, 132, 192, 196):
                    struct.pack_into("<I", self.mm, base + off, rng.choice([0, 1, rng.randrange(1 << 32)]))
                data = base + 256
                for _ in range(rng.randrange(8)):
                    off = rng.randrange(cap - 8) & ~(7 if rng.random() < 0.8 else 0)
                    ln = rng.choice(
                        [0, 1, 64, cap // 2 - 8, cap // 2, 0xFFFFFFFE, WRAP_MARKER, rng.randrange(1 << 32)]
                    )
                    struct.pack_into("<II", self.mm, data + off, ln, rng.randrange(1 << 32))
            consumer, producer = self.region.ring(0), self.region.ring(1)
            try:
                for _ in range(8):
                    try:
                        if consumer.try_read() is None:
                            break
                    except CorruptedData:
                        continue
                    except RingPoisoned:
                        break
                for _ in range(8):
                    try:
                        producer.try_write(bytes(rng.choice([0, 1, 100, 5000, cap // 2 - 8, cap // 2])))
                    except (MessageTooLarge, RingPoisoned):
                        pass
            except Exception as e:  # pragma: no cover - the failure this test is for
                self.fail(f"round {round_}: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------- doorbell (threads)


class TestDoorbell(RegionCase):
    def test_consumer_woken(self):
        r = self.ring
        result = {}

        def consumer():
            t0 = time.monotonic()
            result["msg"] = r.read(timeout=10)
            result["t"] = time.monotonic() - t0

        th = threading.Thread(target=consumer)
        th.start()
        time.sleep(0.2)  # consumer is asleep on the futex by now
        self.assertEqual(r._consumer_sleeping.value, 1)
        r.try_write(b"wake up")
        th.join(5)
        self.assertFalse(th.is_alive())
        self.assertEqual(result["msg"], b"wake up")
        self.assertLess(result["t"], 5)
        self.assertEqual(r._consumer_sleeping.value, 0)
        self.assertGreaterEqual(r._data_seq.value, 1)

    @unittest.skipUnless(IMPLEMENTATION == "c", "the C half releases the GIL while it waits")
    def test_a_ring_waited_on_by_another_thread_is_not_closed(self):
        # Closing would let the mapping go while the other thread sleeps on a word in it.
        reader = self.region.ring(1)
        result = {}
        th = threading.Thread(target=lambda: result.setdefault("msg", reader.read(timeout=10)))
        th.start()
        deadline = time.monotonic() + 5
        while reader._consumer_sleeping.value == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with self.assertRaisesRegex(BufferError, "being read or written by another thread"):
            reader.close()
        self.region.ring(1).try_write(b"done")
        th.join(5)
        self.assertEqual(result["msg"], b"done")
        reader.close()  # idle now

    def test_producer_woken(self):
        r = self.ring
        big = bytes(r.max_payload)
        r.try_write(big)
        r.try_write(big)
        done = {}

        def producer():
            r.write(b"late", timeout=10)
            done["ok"] = True

        th = threading.Thread(target=producer)
        th.start()
        time.sleep(0.2)
        self.assertEqual(r._producer_sleeping.value, 1)
        self.assertEqual(r.try_read(), big)
        th.join(5)
        self.assertFalse(th.is_alive())
        self.assertTrue(done.get("ok"))
        self.assertEqual(r.try_read(), big)
        self.assertEqual(r.try_read(), b"late")

    def test_skipped_corrupt_record_wakes_producer(self):
        # Skipping a record with a bad crc32 frees space: it must wake a producer that
        # sleeps for space (else both sides could sleep forever).
        r = self.ring
        big = _pattern(r.max_payload, 9)
        r.try_write(big)
        r.try_write(big)
        self.mm[r.data_offset(0) + 8 + 1000] ^= 0xFF
        done = threading.Event()

        def producer():
            r.write(b"late", timeout=10)
            done.set()

        th = threading.Thread(target=producer)
        th.start()
        time.sleep(0.2)
        self.assertEqual(r._producer_sleeping.value, 1)
        with self.assertRaises(CorruptedData):
            r.try_read()
        self.assertTrue(done.wait(5))
        th.join(5)
        self.assertEqual(r.try_read(), big)
        self.assertEqual(r.try_read(), b"late")

    def test_ping_pong_threads(self):
        # Many sleep/wake round trips with spinning disabled, so every wait goes through
        # the futex: a lost wake-up would hang (and time out) here.
        rx, tx = self.region.ring(0, spin=0), self.region.ring(1, spin=0)
        erx, etx = self.region.ring(0, spin=0), self.region.ring(1, spin=0)
        n = 3000

        def echo():
            for _ in range(n):
                etx.write(erx.read(timeout=10), timeout=10)

        th = threading.Thread(target=echo)
        th.start()
        for k in range(n):
            m = struct.pack("<Q", k)
            rx.write(m, timeout=10)
            self.assertEqual(tx.read(timeout=10), m)
        th.join(10)
        self.assertFalse(th.is_alive())


# --------------------------------------------------------------------------- the bell


def new_bell(case: unittest.TestCase, flags: int = os.EFD_CLOEXEC | os.EFD_NONBLOCK) -> int:
    """An eventfd as the orchestrator makes a response bell (its NIO sets O_NONBLOCK)."""
    bell = os.eventfd(0, flags)
    case.addCleanup(os.close, bell)
    return bell


class TestBell(RegionCase):
    """A ring given a bell (an eventfd) wakes its sleeping consumer by writing 1 to it, and
    leaves data_seq alone: the orchestrator waits on the response ring's bell in epoll."""

    def rung(self, bell: int) -> int:
        """The bell's counter, read back to 0 (a non-blocking bell)."""
        try:
            return os.eventfd_read(bell)
        except BlockingIOError:
            return 0

    def sleeping(self, ring: Ring) -> None:
        ring._consumer_sleeping.value = 1

    def test_a_sleeping_consumer_is_rung_not_futex_woken(self):
        bell = new_bell(self)
        r = self.region.ring(0, bell=bell)
        self.assertEqual(r.bell, bell)
        seq = r._data_seq.value
        self.assertTrue(r.try_write(b"awake"))
        self.assertEqual(self.rung(bell), 0)  # the consumer is not asleep: nobody is rung
        self.sleeping(r)
        self.assertTrue(r.try_write(b"one"))
        self.assertEqual(r._consumer_sleeping.value, 0, "the waker takes the flag down")
        r.write(b"two", timeout=5)
        self.assertEqual(self.rung(bell), 1, "one wake-up until the consumer announces again")
        self.sleeping(r)
        self.assertTrue(r.try_write(b"three"))
        self.assertEqual(self.rung(bell), 1)
        self.assertEqual(r._data_seq.value, seq)
        for expected in (b"awake", b"one", b"two", b"three"):
            self.assertEqual(r.try_read(), expected)

    def test_a_ring_without_a_bell_futex_wakes(self):
        bell = new_bell(self)
        self.region.ring(1, bell=bell)  # the other ring's bell is not this ring's
        r = self.region.ring(0)
        self.assertIsNone(r.bell)
        seq = r._data_seq.value
        self.sleeping(r)
        self.assertTrue(r.try_write(b"x"))
        self.assertEqual(r._data_seq.value, seq + 1)
        self.assertTrue(r.try_write(b"y"))
        self.assertEqual(r._data_seq.value, seq + 1, "woken once: no second FUTEX_WAKE before it sleeps again")
        self.assertEqual(self.rung(bell), 0)

    def test_a_blocking_bell(self):
        bell = new_bell(self, os.EFD_CLOEXEC)
        r = self.region.ring(0, bell=bell)
        self.sleeping(r)
        self.assertTrue(r.try_write(b"x"))
        self.assertTrue(select.select([bell], [], [], 5)[0], "not rung")  # a blocking read could hang
        self.assertEqual(os.eventfd_read(bell), 1)

    def test_a_saturated_bell_is_a_wake_up_already_pending(self):
        # The largest counter an eventfd holds: one more would block, on a non-blocking
        # descriptor EAGAIN, which the producer ignores.
        bell = new_bell(self)
        os.eventfd_write(bell, 0xFFFFFFFFFFFFFFFE)
        r = self.region.ring(0, bell=bell)
        seq = r._data_seq.value
        self.sleeping(r)
        self.assertTrue(r.try_write(b"x"))
        r.write(b"y", timeout=5)
        self.assertEqual(self.rung(bell), 0xFFFFFFFFFFFFFFFE)
        self.assertEqual(r._data_seq.value, seq)
        self.assertEqual((r.try_read(), r.try_read()), (b"x", b"y"))

    def test_a_bell_that_cannot_be_written_is_an_oserror(self):
        # As a failed futex wake is: the record is published all the same.
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        self.addCleanup(os.close, write_end)
        r = self.region.ring(0, bell=read_end)
        self.sleeping(r)
        with self.assertRaises(OSError) as cm:
            r.try_write(b"x")
        self.assertEqual(cm.exception.errno, errno.EBADF)
        self.assertEqual(self.region.ring(0).try_read(), b"x")

    def test_poisoning_rings_a_sleeping_consumer(self):
        # Positions that cannot hold poison the ring; a consumer asleep on the bell must look.
        for side in ("producer", "consumer"):
            with self.subTest(side=side):
                self.setUp()
                bell = new_bell(self)
                r = self.region.ring(0, bell=bell)
                seq = r._data_seq.value
                r._head.value, r._tail.value = 8, 64
                self.sleeping(r)
                with self.assertRaises(RingPoisoned):
                    r.try_write(b"x") if side == "producer" else r.try_read()
                self.assertEqual(self.rung(bell), 1)
                self.assertEqual(r._data_seq.value, seq)

    def test_the_ring_never_closes_its_bell(self):
        bell = new_bell(self)
        self.region.ring(1, bell=bell).try_write(b"x")
        self.region.close()
        os.eventfd_write(bell, 1)  # still open
        self.assertEqual(self.rung(bell), 1)

    def test_a_bell_is_a_descriptor(self):
        for bad in (-1, "3", 3.0, True):
            with self.subTest(bell=bad):
                with self.assertRaises(ValueError):
                    self.region.ring(0, bell=bad)

    def test_ping_pong_threads_on_bells(self):
        # Each side waits as the orchestrator does (BellReader: no spin, no futex) on the bell
        # the other side's ring rings: a lost or futex-only wake-up would time out here.
        there, back = new_bell(self), new_bell(self)
        tx, rx = self.region.ring(0, spin=0, bell=there), BellReader(self.region.ring(1, spin=0), back)
        etx, erx = self.region.ring(1, spin=0, bell=back), BellReader(self.region.ring(0, spin=0), there)
        n = 3000

        def echo():
            for _ in range(n):
                etx.write(erx.read(10), timeout=10)

        th = threading.Thread(target=echo)
        th.start()
        for k in range(n):
            m = struct.pack("<Q", k)
            tx.write(m, timeout=10)
            self.assertEqual(rx.read(10), m)
        th.join(10)
        self.assertFalse(th.is_alive())
        self.assertGreater(rx.rung + erx.rung, 0)
        self.assertEqual((tx._data_seq.value, etx._data_seq.value), (0, 0))


# --------------------------------------------------------------------------- test stream


class TestStreamGenerator(unittest.TestCase):
    def test_splitmix64_reference(self):
        # Reference outputs of splitmix64 (Vigna) for seed 0 and 1234567.
        s, out = splitmix64(0)
        self.assertEqual(out, 0xE220A8397B1DCDAF)
        s = 1234567
        outs = []
        for _ in range(3):
            s, o = splitmix64(s)
            outs.append(o)
        self.assertEqual(outs, [6457827717110365317, 3203168211198807973, 9817491932198370423])

    def test_block_and_messages(self):
        ts = TestStream(0, 65536)
        self.assertEqual(len(ts.block), 131072)
        self.assertEqual(ts.block[:8], struct.pack("<Q", 0xE220A8397B1DCDAF))
        # recompute message 0..99 independently from the state after the block
        s = 0
        for _ in range(16384):
            s, _o = splitmix64(s)
        for i in range(100):
            s, x = splitmix64(s)
            ln = x % 65537
            st = (x >> 32) % 65536
            exp = bytearray(ts.block[st : st + ln])
            if ln >= 8:
                exp[0:8] = struct.pack("<Q", i)
            self.assertEqual(ts.next_message(), bytes(exp))

    def test_max_len_bounds(self):
        for ml in (0, 1, 7, 8, 100):
            ts = TestStream(99, ml)
            for _ in range(500):
                self.assertLessEqual(len(ts.next_message()), ml)
        with self.assertRaises(ValueError):
            TestStream(1, 65537)

    def test_first_difference(self):
        self.assertEqual(first_difference(b"abc", b"abc"), -1)
        self.assertEqual(first_difference(b"abc", b"abd"), 2)
        self.assertEqual(first_difference(b"abc", b"ab"), 2)
        a = bytes(70000)
        b = bytearray(a)
        b[65432] = 1
        self.assertEqual(first_difference(a, b), 65432)

    def test_speed_one_million(self):
        # 10**6 specs + payloads of 0..65536 bytes must be cheap (only slicing).
        ts = TestStream(5, 65536)
        t0 = time.perf_counter()
        total = 0
        payload = ts.payload
        spec = ts.next_spec
        for _ in range(1_000_000):
            total += len(payload(*spec()))
        dt = time.perf_counter() - t0
        print(f"\n  teststream: 1e6 messages, {total / 1e9:.1f} GB, {dt:.2f}s", file=sys.stderr)
        self.assertLess(dt, 60)


# --------------------------------------------------------------------------- real processes


# The peer process uses the other implementation than this one (AETHERLESS_RING), so every
# two-process test is also a test that the C half and ring.py agree on the bytes.
OTHER_IMPLEMENTATION = "python" if IMPLEMENTATION == "c" else "c"
PEER_ENV = {**os.environ, "AETHERLESS_RING": OTHER_IMPLEMENTATION}


def run_peer(*args, timeout=None, **kw):
    return subprocess.run([sys.executable, PEER, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=PEER_ENV, **kw)


def spawn_peer(*args, **kw):
    return subprocess.Popen([sys.executable, PEER, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=PEER_ENV, **kw)


def import_ring(setting: str | None, sdk: str = SDK) -> subprocess.CompletedProcess:
    """Import aetherless.ring from ``sdk`` in a fresh interpreter with AETHERLESS_RING=setting."""
    env = {k: v for k, v in os.environ.items() if k not in ("AETHERLESS_RING", "PYTHONPATH")}
    if setting is not None:
        env["AETHERLESS_RING"] = setting
    code = "import aetherless.ring as r; print(r.IMPLEMENTATION); print(r.C_RING_UNAVAILABLE)"
    return subprocess.run([sys.executable, "-c", code], cwd=sdk, env=env, capture_output=True, text=True,
                          timeout=30)


class TestImplementationChoice(unittest.TestCase):
    """AETHERLESS_RING picks the C half or ring.py; nothing falls back without saying why."""

    def test_the_c_half_is_built_and_chosen_by_default(self):
        r = import_ring(None)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), ["c", ""])

    def test_python_on_request(self):
        r = import_ring("python")
        self.assertEqual(r.stdout.splitlines(), ["python", "AETHERLESS_RING=python"])

    def test_unknown_setting_is_an_import_error_naming_it(self):
        r = import_ring("fast")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("AETHERLESS_RING='fast': expected 'c' or 'python'", r.stderr)

    def test_without_the_built_module(self):
        # A copy of the package alone, as a pip-installed wheel has it.
        with tempfile.TemporaryDirectory() as folder:
            shutil.copytree(os.path.join(SDK, "aetherless"), os.path.join(folder, "aetherless"),
                            ignore=shutil.ignore_patterns("__pycache__"))
            r = import_ring(None, folder)
            self.assertEqual(r.returncode, 0, r.stderr)
            implementation, why = r.stdout.splitlines()
            self.assertEqual(implementation, "python")
            self.assertIn("_aetherless_cring cannot be imported", why)
            self.assertIn("scripts/build-python-ext.sh", why)
            # Asked for by name, its absence is an error.
            r = import_ring("c", folder)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("AETHERLESS_RING=c but _aetherless_cring cannot be imported", r.stderr)

    def test_a_module_built_from_an_older_cring_c_is_not_used(self):
        # What a machine that did not rebuild keeps beside the package: a module without ABI
        # (its Core takes no bell). A stand-in with what such a module exports.
        with tempfile.TemporaryDirectory() as folder:
            shutil.copytree(os.path.join(SDK, "aetherless"), os.path.join(folder, "aetherless"),
                            ignore=shutil.ignore_patterns("__pycache__"))
            with open(os.path.join(folder, "_aetherless_cring.py"), "w") as f:
                f.write("class Core:\n    pass\n\ndef bind_errors(*classes):\n    pass\n")
            r = import_ring(None, folder)
            self.assertEqual(r.returncode, 0, r.stderr)
            implementation, why = r.stdout.splitlines()
            self.assertEqual(implementation, "python")
            self.assertIn("_aetherless_cring.py was built from an older sdk/python/ext/cring.c (ABI 1, this "
                          "ring.py needs 2): rebuild it with scripts/build-python-ext.sh", why)
            r = import_ring("c", folder)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("AETHERLESS_RING=c but ", r.stderr)
            self.assertIn("(ABI 1, this ring.py needs 2)", r.stderr)


class TestTwoProcesses(unittest.TestCase):
    def make(self, capacity):
        name = unique_name("proc")
        r = run_peer("create", "--shm", name, "--capacity", capacity, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.addCleanup(unlink_shm, name, True)
        return name

    def test_200k_messages_two_processes(self):
        name = self.make(256 * KIB)
        n, seed, max_len = 200_000, 0xA37, 65536
        t0 = time.monotonic()
        cons = spawn_peer("consume", "--shm", name, "--ring", 0, "--count", n, "--seed", seed,
                          "--max-len", max_len, "--timeout", 30)
        prod = spawn_peer("produce", "--shm", name, "--ring", 0, "--count", n, "--seed", seed,
                          "--max-len", max_len, "--timeout", 30)
        try:
            pout, perr = prod.communicate(timeout=600)
            cout, cerr = cons.communicate(timeout=600)
        finally:
            for p in (prod, cons):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        dt = time.monotonic() - t0
        self.assertEqual(prod.returncode, 0, pout + perr)
        self.assertEqual(cons.returncode, 0, cout + cerr)
        self.assertTrue(cout.startswith(f"OK count={n} bytes="), cout)
        nbytes = int(cout.split("bytes=")[1])
        self.assertEqual(pout.strip(), cout.strip())
        print(f"\n  200k messages (0..64 KiB, {nbytes / 1e9:.2f} GB) over a 256 KiB ring: {dt:.2f}s "
              f"({n / dt:,.0f} msg/s, {nbytes / dt / 1e6:,.0f} MB/s)", file=sys.stderr)

    def test_bell_two_processes(self):
        """20k messages over a ring whose producer has a bell, the consumer waiting on the
        eventfd as the orchestrator does (BellReader), each way: the peer (the other
        implementation) rings and this process waits, then the reverse. The producer pauses
        5 ms every 1000 messages, so the consumer runs dry and sleeps: a futex wake-up in
        place of the bell would leave it waiting until its timeout."""
        n, seed, max_len = 20_000, 0xBE11, 65536
        with self.subTest(rings="peer"):
            name = self.make(256 * KIB)
            bell = new_bell(self)
            prod = spawn_peer("produce", "--shm", name, "--ring", 1, "--count", n, "--seed", seed,
                              "--max-len", max_len, "--timeout", 30, "--bell", bell, "--pause-every", 1000,
                              pass_fds=[bell])
            try:
                with Region(name) as reg:
                    ring = reg.ring(1)
                    reader = BellReader(ring, bell)
                    expect = TestStream(seed, max_len)
                    for i in range(n):
                        try:
                            m = reader.read(30)
                        except RingTimeout:
                            prod.kill()
                            self.fail(f"message {i}: no bell within 30 s; peer: {prod.communicate()}")
                        exp = expect.next_message()
                        if m != exp:
                            self.fail(f"message {i} differs at offset {first_difference(m, exp)} "
                                      f"(len {len(m)} vs {len(exp)})")
                    data_seq = ring._data_seq.value
                out, err = prod.communicate(timeout=60)
            finally:
                if prod.poll() is None:
                    prod.kill()
                    prod.communicate()
            self.assertEqual(prod.returncode, 0, out + err)
            self.assertTrue(out.startswith(f"OK count={n} bytes="), out)
            self.assertGreater(reader.rung, 0)
            self.assertEqual(data_seq, 0)
        with self.subTest(rings="this process"):
            name = self.make(256 * KIB)
            bell = new_bell(self)
            cons = spawn_peer("consume", "--shm", name, "--ring", 0, "--count", n, "--seed", seed,
                              "--max-len", max_len, "--timeout", 30, "--bell", bell, pass_fds=[bell])
            try:
                with Region(name) as reg:
                    ring = reg.ring(0, bell=bell)
                    stream = TestStream(seed, max_len)
                    for i in range(n):
                        if i and i % 1000 == 0:
                            time.sleep(0.005)
                        try:
                            ring.write(stream.next_message(), timeout=30)
                        except RingTimeout:
                            cons.kill()
                            self.fail(f"message {i}: the consumer stopped reading; peer: {cons.communicate()}")
                    data_seq = ring._data_seq.value
                out, err = cons.communicate(timeout=60)
            finally:
                if cons.poll() is None:
                    cons.kill()
                    cons.communicate()
            self.assertEqual(cons.returncode, 0, out + err)
            self.assertTrue(out.startswith(f"OK count={n} bytes="), out)
            rung = int(err.split("bell rung=")[1].split()[0])
            self.assertGreater(rung, 0)
            self.assertEqual(data_seq, 0)

    def test_consumer_reports_mismatch(self):
        name = self.make(64 * KIB)
        prod = spawn_peer("produce", "--shm", name, "--ring", 1, "--count", 50, "--seed", 1,
                          "--max-len", 1000, "--timeout", 10)
        r = run_peer("consume", "--shm", name, "--ring", 1, "--count", 50, "--seed", 2,
                     "--max-len", 1000, "--timeout", 10, timeout=60)
        prod.kill()
        prod.communicate()
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stdout.startswith("FAIL mismatch index=0 offset="), r.stdout)

    def test_consumer_timeout_reports_fail(self):
        name = self.make(64 * KIB)
        r = run_peer("consume", "--shm", name, "--ring", 0, "--count", 1, "--seed", 1,
                     "--max-len", 10, "--timeout", 0.2, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stdout.startswith("FAIL timeout index=0"), r.stdout)

    def test_layout_mismatch_from_peer(self):
        name = self.make(64 * KIB)
        with Region(name) as reg:
            reg.mmap[8:12] = struct.pack("<I", 9)
        r = run_peer("consume", "--shm", name, "--ring", 0, "--count", 1, "--seed", 1,
                     "--max-len", 10, "--timeout", 1, timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn("layout_version", r.stdout)
        self.assertIn("expected 1, found 9", r.stdout)

    def test_echo_peer(self):
        name = self.make(64 * KIB)
        echo = spawn_peer("echo", "--shm", name, "--timeout", 30)
        try:
            with Region(name) as reg:
                tx, rx = reg.ring(0), reg.ring(1)
                msgs = [_pattern(n, n) for n in (1, 64, 1000, 20000, tx.max_payload)] * 20 + [b""]
                for m in msgs:
                    tx.write(m, timeout=30)
                    self.assertEqual(rx.read(timeout=30), m)
            out, err = echo.communicate(timeout=30)
        finally:
            if echo.poll() is None:
                echo.kill()
                echo.wait()
        self.assertEqual(echo.returncode, 0, out + err)
        self.assertEqual(out.split()[:2], ["OK", f"count={len(msgs)}"])

    def test_producer_sigkilled_mid_stream(self):
        """The producer is SIGKILLed while writing; the consumer must only ever return
        complete, valid messages: a prefix of the stream, then nothing."""
        rnd = random.Random(os.getpid())
        for trial in range(3):
            name = self.make(256 * KIB)
            seed = 1000 + trial
            with Region(name) as reg:
                ring = reg.ring(0)
                expect = TestStream(seed, 65536)
                prod = spawn_peer("produce", "--shm", name, "--ring", 0, "--count", 10_000_000,
                                  "--seed", seed, "--max-len", 65536)
                try:
                    got = 0
                    kill_after = rnd.uniform(0.3, 1.0)
                    t0 = time.monotonic()
                    killed = False
                    while True:
                        if not killed and time.monotonic() - t0 > kill_after:
                            # kill while the producer is busy: ring is being refilled as we read
                            os.kill(prod.pid, signal.SIGKILL)
                            prod.wait()
                            killed = True
                        try:
                            m = ring.read(timeout=0.5 if killed else 10)
                        except RingTimeout:
                            self.assertTrue(killed, "producer stalled before the kill")
                            break
                        exp = expect.next_message()
                        if m != exp:
                            self.fail(f"trial {trial}: message {got} differs at offset "
                                      f"{first_difference(m, exp)} (len {len(m)} vs {len(exp)})")
                        got += 1
                finally:
                    if prod.poll() is None:
                        prod.kill()
                    prod.communicate()
                self.assertEqual(prod.returncode, -signal.SIGKILL)
                self.assertGreater(got, 0)
                self.assertEqual(ring.head, ring.tail)  # everything published was delivered
                self.assertFalse(ring.poisoned)
                self.assertIsNone(ring.try_read())


if __name__ == "__main__":
    unittest.main()
