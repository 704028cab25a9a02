"""Shared-memory SPSC rings, layout version 1 (see docs/shm-layout.md).

Standard library only.  Linux / x86-64 only: the doorbell is a futex and the
memory-ordering argument below relies on x86-64 TSO.

A ring can be given a bell (``Region.ring(i, bell=fd)``), an eventfd: its producer then
wakes a sleeping consumer by writing 1 to the eventfd instead of bumping ``data_seq`` and
FUTEX_WAKE (same condition: ``consumer_sleeping == 1`` after the full fence).  The
orchestrator reads responses on its event loop, which watches that eventfd in epoll: the
runtime's response ring (ring 1) has the bell ATTACH hands over.  The space direction
(a producer waiting for room) stays a futex.

Memory ordering
---------------
Head, tail and the flag words are accessed through ``ctypes.c_uint64`` /
``ctypes.c_uint32`` objects made with ``from_buffer`` on the mmap.  Their
``.value`` getter/setter is a fixed-size ``memcpy`` of an aligned word, i.e. a
single ``mov``: on x86-64 (TSO) every aligned load is an acquire and every
aligned store a release, and the interpreter's opaque C calls keep the compiler
from reordering the payload copy (``mmap`` slice assignment) after the head
store.  What TSO does *not* give is store->load ordering, which the doorbell
needs (``store head; fence; load consumer_sleeping`` against
``store consumer_sleeping; fence; load head``).  For that full fence we execute
one locked instruction through ctypes, see ``_make_fence``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import sys
import time
import zlib

__all__ = [
    "MAGIC",
    "LAYOUT_VERSION",
    "REGION_HEADER_SIZE",
    "RING_HEADER_SIZE",
    "WRAP_MARKER",
    "RingError",
    "LayoutMismatch",
    "MessageTooLarge",
    "CorruptedData",
    "RingPoisoned",
    "RingTimeout",
    "Region",
    "Ring",
    "shm_path",
    "unlink_shm",
    "max_payload_for",
]

MAGIC = b"AETHSHM1"
LAYOUT_VERSION = 1
REGION_HEADER_SIZE = 64
RING_HEADER_SIZE = 256
PAGE = 4096
MIN_CAPACITY = 65536
# len is a u32 and 0xFFFFFFFF is the wrap marker, so max_payload = cap/2 - 8
# must stay below 0xFFFFFFFF; we cap ring_capacity at 2**32 (see the doc).
MAX_CAPACITY = 1 << 32
WRAP_MARKER = 0xFFFFFFFF
_U64_MAX = (1 << 64) - 1

# Region header: magic, layout_version, ring_count, ring_capacity, ring_stride.
_REGION_HDR = struct.Struct("<8sIIQQ")
# Record header: len, crc32.
_REC_HDR = struct.Struct("<II")
_U32 = struct.Struct("<I")

# Offsets inside a ring header.
_OFF_HEAD = 0
_OFF_TAIL = 64
_OFF_POISONED = 72
_OFF_DATA_SEQ = 128
_OFF_CONSUMER_SLEEPING = 132
_OFF_SPACE_SEQ = 192
_OFF_PRODUCER_SLEEPING = 196

_ZERO_PAD = bytes(8)


# --------------------------------------------------------------------------- errors


class RingError(Exception):
    """Base class of every error raised by this module."""


class LayoutMismatch(RingError):
    """The shared-memory object does not follow layout version 1."""

    def __init__(self, name: str, field: str, expected, found):
        self.name = name
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(
            f"shm {name!r}: layout mismatch in {field}: expected {expected!r}, found {found!r}"
        )


class MessageTooLarge(RingError, ValueError):
    def __init__(self, size: int, max_payload: int):
        self.size = size
        self.max_payload = max_payload
        super().__init__(f"message too large: {size} bytes > max_payload {max_payload}")


class CorruptedData(RingError):
    """A record's payload failed its crc32; the record was skipped, the ring is usable."""

    def __init__(self, offset: int, stored_crc: int, computed_crc: int):
        self.offset = offset
        self.stored_crc = stored_crc
        self.computed_crc = computed_crc
        super().__init__(
            f"corrupted data: record at data offset {offset}: stored crc32 "
            f"0x{stored_crc:08x}, computed 0x{computed_crc:08x} (record skipped)"
        )


class RingPoisoned(RingError):
    """The ring can no longer be used: the consumer found a record it cannot delimit,
    or a side found a head/tail word the other side cannot have written (``reason``
    says which); the poisoned word is set and the ring is no longer read."""

    def __init__(self, offset: int, length: int, reason: str | None = None):
        self.offset = offset
        self.length = length
        self.reason = reason
        if reason is None:
            message = (
                f"ring poisoned: record at data offset {offset} has undelimitable len "
                f"{length} (0x{length:08x})"
            )
        else:
            message = f"ring poisoned at data offset {offset}: {reason}"
        super().__init__(message)


class RingTimeout(RingError, TimeoutError):
    pass


# --------------------------------------------------------------------------- the C half

# _aetherless_cring (sdk/python/ext/cring.c, built beside this package by scripts/
# build-python-ext.sh) does what Ring.try_read / read / try_write / write do, in C: ~7 us of
# interpreter per message gone. This file stays the reference and the fallback for interpreters
# it was not built for. AETHERLESS_RING picks: unset = C when built, "c" = C or an ImportError,
# "python" = this file.
#: The C half's interface this file calls (its module's ABI): a module built from an older
#: cring.c (one that may still sit beside the package on a machine that did not rebuild) is
#: not used. 2: Core takes the ring's bell.
CRING_ABI = 2
#: AETHERLESS_RING as set ("" when unset).
RING_SETTING = os.environ.get("AETHERLESS_RING", "")
if RING_SETTING not in ("", "c", "python"):
    raise ImportError(f"AETHERLESS_RING={RING_SETTING!r}: expected 'c' or 'python' (or unset: C when built)")
_cring = None
#: Why the C half is not used ("" when it is).
C_RING_UNAVAILABLE = "AETHERLESS_RING=python" if RING_SETTING == "python" else ""
if RING_SETTING != "python":
    try:
        import _aetherless_cring as _cring
    except ImportError as e:
        if RING_SETTING == "c":
            raise ImportError(
                f"AETHERLESS_RING=c but _aetherless_cring cannot be imported ({e}); build it with "
                f"scripts/build-python-ext.sh {sys.executable}"
            ) from e
        C_RING_UNAVAILABLE = (
            f"_aetherless_cring cannot be imported by {sys.executable} (Python "
            f"{sys.version_info.major}.{sys.version_info.minor}): {e}; scripts/build-python-ext.sh "
            f"builds it into sdk/python"
        )
    else:
        # An old module would take a Core without its bell and futex-wake a consumer that
        # waits on the bell: never used, whatever AETHERLESS_RING says.
        _found_abi = getattr(_cring, "ABI", 1)
        if _found_abi != CRING_ABI:
            _stale = (
                f"{getattr(_cring, '__file__', '_aetherless_cring')} was built from an older "
                f"sdk/python/ext/cring.c (ABI {_found_abi}, this ring.py needs {CRING_ABI}): rebuild "
                f"it with scripts/build-python-ext.sh {sys.executable}"
            )
            _cring = None
            if RING_SETTING == "c":
                raise ImportError(f"AETHERLESS_RING=c but {_stale}")
            C_RING_UNAVAILABLE = _stale
        else:
            _cring.bind_errors(CorruptedData, RingPoisoned, RingTimeout, MessageTooLarge)
#: Which implementation a Ring reads and writes with: "c" or "python".
IMPLEMENTATION = "python" if _cring is None else "c"

# Bounded spin before sleeping on the futex: each step is one sched_yield plus a re-check.
# Short on purpose, the host may have only 2 vCPUs: a spinning handler takes CPU from the
# gateway that would hand it the next request. A C step costs ~0.4 us, a ring.py step (a whole
# try_read) ~1.5 us. Measured with the C half (wrk against one function, c=16 and c=64, A/B in
# one `aether up`, BENCHMARKS.md): 64 steps cost the handler 19 us per answer and gave 30k req/s
# at c=64; 2, 4 and 8 steps all 10-12 us and 36-38k; 0 steps moved the cost into the gateway.
DEFAULT_SPIN = 64 if _cring is None else 4


# --------------------------------------------------------------------------- helpers


def shm_path(name: str) -> str:
    """Map a POSIX shm name ("/aetherless-x-0") to its Linux file (/dev/shm/aetherless-x-0)."""
    if not name.startswith("/") or "/" in name[1:] or len(name) < 2:
        raise ValueError(f"invalid POSIX shm name {name!r}: must be '/' followed by no other '/'")
    return "/dev/shm/" + name[1:]


def unlink_shm(name: str, missing_ok: bool = False) -> None:
    try:
        os.unlink(shm_path(name))
    except FileNotFoundError:
        if not missing_ok:
            raise


def max_payload_for(capacity: int) -> int:
    return capacity // 2 - 8


def _make_fence():
    """Return ``(fence, description)``; ``fence()`` executes one locked x86 instruction.

    Choice (measured on the 2-core EPYC dev VM, CPython 3.11, 7 x 300k calls
    each, interleaved; the VM was shared with compiles, so min / median):

      libatomic __atomic_fetch_add_4(&private, 0, SEQ_CST), PyDLL,
          no argtypes, pre-built c_void_p, restype None ...... ~270 / ~460 ns
          (disassembles to ``lock xadd``)
      libc pthread_spin_trylock + pthread_spin_unlock, PyDLL ... ~280 / ~500 ns
          (``lock cmpxchg`` + plain store)
      the same through CDLL (releases/reacquires the GIL) ...... ~+300 ns
      any call with ``argtypes`` set (per-argument converters)  ~600-700 ns
      trylock alone on a held lock ............................. ~180 / ~320 ns
          (rejected: relies on glibc's x86 asm always executing the
          locked cmpxchg even when the lock is taken)

    So: PyDLL (the callee is a few instructions; releasing the GIL only costs),
    no argtypes (the arguments are a pre-built pointer object and small ints),
    and libatomic's seq_cst fetch_add on a private word, which is a full
    barrier by definition.  Fallback when libatomic.so.1 is missing: spin
    trylock/unlock on a private spinlock.  The fence is paid once per message
    on each side (producer: after the head store; consumer: after the tail
    store), plus once per sleep; it is ~15% of a 64-byte write+read (~3.5 us).
    """
    keep = []
    try:
        lib = ctypes.PyDLL("libatomic.so.1")
        fadd = lib.__atomic_fetch_add_4
        fadd.restype = None
        word = ctypes.c_uint32(0)
        ptr = ctypes.c_void_p(ctypes.addressof(word))
        keep += [lib, word, ptr]

        def fence(_f=fadd, _p=ptr, _keep=keep):
            _f(_p, 0, 5)  # 5 == __ATOMIC_SEQ_CST

        return fence, "libatomic __atomic_fetch_add_4 (lock xadd)"
    except (OSError, AttributeError):
        pass
    libc = ctypes.PyDLL(None)
    trylock = libc.pthread_spin_trylock
    unlock = libc.pthread_spin_unlock
    trylock.restype = None
    unlock.restype = None
    lock = ctypes.c_int(0)
    libc.pthread_spin_init(ctypes.byref(lock), 0)
    ptr = ctypes.byref(lock)
    keep += [libc, lock, ptr]

    def fence(_t=trylock, _u=unlock, _p=ptr, _keep=keep):
        _t(_p)
        _u(_p)

    return fence, "pthread_spin_trylock/unlock (lock cmpxchg)"


_fence, FENCE_KIND = _make_fence()


# futex(2) through syscall(2).  Shared futexes (no FUTEX_PRIVATE_FLAG): the
# two sides are different processes mapping the same object.
_SYS_futex = {"x86_64": 202, "aarch64": 98}.get(os.uname().machine, 202)
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_libc = ctypes.CDLL(None, use_errno=True)  # CDLL: releases the GIL while blocked
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [
    ctypes.c_long,  # SYS_futex
    ctypes.c_void_p,  # uaddr
    ctypes.c_int,  # op
    ctypes.c_uint32,  # val
    ctypes.c_void_p,  # timeout (struct timespec *) or NULL
    ctypes.c_void_p,  # uaddr2
    ctypes.c_uint32,  # val3
]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _futex_wait(addr: int, expected: int, timeout: float | None) -> None:
    """Sleep while *addr == expected.  Returns on wake, value change (EAGAIN),
    signal (EINTR) or timeout (ETIMEDOUT); the caller re-checks its condition."""
    if timeout is None:
        ts = None
    else:
        if timeout <= 0:
            return
        sec = int(timeout)
        ts = ctypes.byref(_Timespec(sec, int((timeout - sec) * 1e9)))
    r = _syscall(_SYS_futex, addr, _FUTEX_WAIT, expected, ts, None, 0)
    if r == -1:
        e = ctypes.get_errno()
        if e not in (errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT):
            raise OSError(e, "futex(FUTEX_WAIT): " + os.strerror(e))


def _futex_wake(addr: int, n: int = 1) -> None:
    r = _syscall(_SYS_futex, addr, _FUTEX_WAKE, n, None, None, 0)
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, "futex(FUTEX_WAKE): " + os.strerror(e))


# An eventfd adds the native-endian u64 written to its counter (little-endian: checked at the end).
_BELL_ONE = b"\x01\0\0\0\0\0\0\0"


def _ring_bell(fd: int) -> None:
    """Add 1 to the eventfd ``fd``.  os.write retries EINTR itself (PEP 475)."""
    try:
        os.write(fd, _BELL_ONE)
    except BlockingIOError:
        # A saturated counter (the descriptor may be non-blocking: the orchestrator's NIO sets
        # O_NONBLOCK on the file description it shares with us): a wake-up is pending already.
        pass


# --------------------------------------------------------------------------- region


class Region:
    """A mapped ``/aetherless-*`` shared-memory object (layout version 1)."""

    def __init__(
        self, name: str, ring_count: int | None = None, ring_capacity: int | None = None,
        fd: int | None = None,
    ):
        """Open an existing object and validate its header.

        ``fd``: the object as a descriptor the orchestrator handed over with ATTACH (a memfd;
        confined handlers see no shared /dev/shm), which this takes over and closes; without
        it the object is opened by ``name`` under /dev/shm.
        ``ring_count`` / ``ring_capacity``, when given, must match the header too.
        Raises ``LayoutMismatch`` (field, expected, found) on any disagreement.
        """
        self.name = name
        self._mm = None
        self._rings: list[Ring] = []
        if fd is None:
            fd = os.open(shm_path(name), os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
            if size < REGION_HEADER_SIZE:
                raise LayoutMismatch(name, "object size", f">= {REGION_HEADER_SIZE}", size)
            hdr = os.pread(fd, REGION_HEADER_SIZE, 0)
            self._validate(name, hdr, size, ring_count, ring_capacity)
            self._mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.size = size

    def _validate(self, name, hdr, size, want_count, want_cap):
        magic, version, count, cap, stride = _REGION_HDR.unpack_from(hdr, 0)
        if magic != MAGIC:
            raise LayoutMismatch(name, "magic", MAGIC, magic)
        if version != LAYOUT_VERSION:
            raise LayoutMismatch(name, "layout_version", LAYOUT_VERSION, version)
        if count < 1 or (want_count is not None and count != want_count):
            raise LayoutMismatch(name, "ring_count", want_count if want_count is not None else ">= 1", count)
        if cap % PAGE or cap < MIN_CAPACITY or cap > MAX_CAPACITY:
            raise LayoutMismatch(
                name, "ring_capacity",
                f"multiple of {PAGE} in [{MIN_CAPACITY}, {MAX_CAPACITY}]", cap,
            )
        if want_cap is not None and cap != want_cap:
            raise LayoutMismatch(name, "ring_capacity", want_cap, cap)
        if stride != RING_HEADER_SIZE + cap:
            raise LayoutMismatch(name, "ring_stride", RING_HEADER_SIZE + cap, stride)
        expected_size = REGION_HEADER_SIZE + count * stride
        if size != expected_size:
            raise LayoutMismatch(name, "object size", expected_size, size)
        self.ring_count = count
        self.ring_capacity = cap
        self.ring_stride = stride
        self.max_payload = max_payload_for(cap)

    @classmethod
    def create(cls, name: str, ring_capacity: int, ring_count: int = 2) -> "Region":
        """Create a new object (O_CREAT|O_EXCL, mode 0600), size it and write the header."""
        if ring_capacity % PAGE or ring_capacity < MIN_CAPACITY or ring_capacity > MAX_CAPACITY:
            raise ValueError(
                f"ring_capacity must be a multiple of {PAGE} in [{MIN_CAPACITY}, {MAX_CAPACITY}]"
            )
        if ring_count < 1:
            raise ValueError("ring_count must be >= 1")
        path = shm_path(name)
        stride = RING_HEADER_SIZE + ring_capacity
        size = REGION_HEADER_SIZE + ring_count * stride
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            os.fchmod(fd, 0o600)  # independent of umask
            os.ftruncate(fd, size)  # zero-filled: ring headers all zero
            # Everything but the magic first, the magic last.
            os.pwrite(fd, _REGION_HDR.pack(b"\0" * 8, LAYOUT_VERSION, ring_count, ring_capacity, stride), 0)
            os.pwrite(fd, struct.pack("<I", os.getpid()), 32)  # owner_pid
            os.pwrite(fd, MAGIC, 0)
        except BaseException:
            os.close(fd)
            unlink_shm(name, missing_ok=True)
            raise
        os.close(fd)
        return cls(name, ring_count=ring_count, ring_capacity=ring_capacity)

    def ring(self, index: int, spin: int = DEFAULT_SPIN, bell: int | None = None) -> "Ring":
        """Ring ``index``; ``bell``: see Ring."""
        if not 0 <= index < self.ring_count:
            raise IndexError(f"ring index {index} out of range (ring_count {self.ring_count})")
        if self._mm is None:
            raise ValueError("region is closed")
        r = Ring(self, index, spin=spin, bell=bell)
        self._rings.append(r)
        return r

    @property
    def mmap(self) -> mmap.mmap:
        return self._mm

    def unlink(self) -> None:
        unlink_shm(self.name, missing_ok=True)

    def close(self) -> None:
        """Close every Ring made from this region (drops their ctypes exports), then the mmap."""
        for r in self._rings:
            r.close()
        self._rings.clear()
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- ring


class Ring:
    """One SPSC ring of a Region.  The same class serves the producer side
    (``try_write``/``write``) and the consumer side (``try_read``/``read``);
    each process must use only its side.

    ``bell``: an eventfd its consumer waits on (the orchestrator's event loop, for the
    response ring), or None.  With one, the producer wakes a sleeping consumer by writing
    the eventfd, never through ``data_seq``; the Ring does not own it (never closes it)."""

    def __init__(self, region: Region, index: int, spin: int = DEFAULT_SPIN, bell: int | None = None):
        if bell is not None and (type(bell) is not int or bell < 0):
            raise ValueError(f"bell must be a descriptor (an int >= 0) or None, not {bell!r}")
        mm = region.mmap
        self._region = region  # keeps the mapping (and Region.__del__) alive while in use
        self.index = index
        self.capacity = cap = region.ring_capacity
        self.max_payload = region.max_payload
        # The largest record (cap / 2): a producer writes a wrap marker only where fewer bytes
        # than its record are left, so a marker with this much room after it is corruption.
        self._max_record = 8 + ((self.max_payload + 7) & ~7)
        # A head above this could overflow 64 bits when advanced.
        self._max_head = _U64_MAX - 2 * cap
        # (offset, reason) once this side poisoned the ring over impossible positions: raised
        # again by every later call (a peer cannot clear it by rewriting the words).  Not the
        # exception itself: its traceback would keep this ring's ctypes exports alive, and
        # Region.close() could no longer close the mmap.
        self._sticky_poison: tuple[int, str] | None = None
        self.spin = spin
        self.bell = bell
        base = REGION_HEADER_SIZE + index * region.ring_stride
        self._base = base
        self._data = base + RING_HEADER_SIZE
        self._mm = mm
        u64 = ctypes.c_uint64.from_buffer
        u32 = ctypes.c_uint32.from_buffer
        self._head = u64(mm, base + _OFF_HEAD)
        self._tail = u64(mm, base + _OFF_TAIL)
        self._poisoned = u32(mm, base + _OFF_POISONED)
        self._data_seq = u32(mm, base + _OFF_DATA_SEQ)
        self._consumer_sleeping = u32(mm, base + _OFF_CONSUMER_SLEEPING)
        self._space_seq = u32(mm, base + _OFF_SPACE_SEQ)
        self._producer_sleeping = u32(mm, base + _OFF_PRODUCER_SLEEPING)
        self._data_seq_addr = ctypes.addressof(self._data_seq)
        self._space_seq_addr = ctypes.addressof(self._space_seq)
        assert cap % 8 == 0 and self._data % 8 == 0
        self._core = None
        if _cring is not None:
            # The C methods shadow this class's own on the instance: no Python frame per call.
            self._core = core = _cring.Core(mm, base, cap, self.max_payload, index, spin,
                                            -1 if bell is None else bell)
            self.try_read, self.read = core.try_read, core.read
            self.try_write, self.write = core.try_write, core.write

    # -- lifecycle

    def close(self) -> None:
        """Drop the ctypes objects and the C core (each holds an export of the mmap buffer)."""
        if self._core is not None:
            self._core.close()
            self._core = None
            for name in ("try_read", "read", "try_write", "write"):
                self.__dict__.pop(name, None)
        self._head = self._tail = self._poisoned = None
        self._data_seq = self._consumer_sleeping = None
        self._space_seq = self._producer_sleeping = None
        self._mm = None
        self._region = None

    # -- introspection (tests, diagnostics)

    @property
    def head(self) -> int:
        return self._head.value

    @property
    def tail(self) -> int:
        return self._tail.value

    @property
    def poisoned(self) -> bool:
        return self._poisoned.value != 0

    def used(self) -> int:
        return self._head.value - self._tail.value

    def data_offset(self, position: int) -> int:
        """Absolute offset in the mmap of ring position ``position``."""
        return self._data + position % self.capacity

    # -- producer

    def try_write(self, payload) -> bool:
        """Publish one payload.  False if the ring has no room now (nothing written).

        Raises MessageTooLarge (nothing written) or RingPoisoned: when the ring is
        full and the consumer has poisoned it, or when head and tail cannot both
        hold (tail ahead of head or more than the capacity behind it, a position
        that is not a multiple of 8, or one near 2**64), which poisons it."""
        if type(payload) is not bytes and type(payload) is not bytearray:
            payload = memoryview(payload).cast("B")
        if self._sticky_poison is not None:
            raise RingPoisoned(self._sticky_poison[0], 0, self._sticky_poison[1])
        n = len(payload)
        if n > self.max_payload:
            raise MessageTooLarge(n, self.max_payload)
        cap = self.capacity
        head = self._head.value
        tail = self._tail.value  # the consumer's word: checked before it is computed with
        # Positions that cannot hold poison the ring (see _poison_positions).
        if tail > head or head - tail > cap or (head | tail) & 7 or head > self._max_head:
            self._poison_positions(head % cap, head, tail)
        off = head % cap
        contig = cap - off
        rec = 8 + ((n + 7) & ~7)
        need = rec if rec <= contig else contig + rec
        if cap - (head - tail) < need:
            if self._poisoned.value:
                self._raise_poisoned()
            return False
        mm = self._mm
        if rec > contig:
            _U32.pack_into(mm, self._data + off, WRAP_MARKER)
            head += contig
            p = self._data
        else:
            p = self._data + off
        end = p + 8 + n
        mm[p + 8 : end] = payload
        if n & 7:
            mm[end : p + rec] = _ZERO_PAD[: rec - 8 - n]
        _REC_HDR.pack_into(mm, p, n, zlib.crc32(payload))
        self._head.value = head + rec  # release store (TSO): publishes the record
        _fence()
        if self._consumer_sleeping.value:
            self._wake_consumer()
        return True

    def _wake_consumer(self) -> None:
        # The waker takes the flag down (docs/shm-layout.md, "Waiting"): the records written
        # before the consumer runs again need no wake-up of their own. A plain store, not the
        # C half's exchange: this side is the only waker, and a wake-up always follows it, so
        # clearing an announcement the consumer made meanwhile loses nothing.
        self._consumer_sleeping.value = 0
        if self.bell is not None:
            # The consumer waits on the bell (in epoll), not on data_seq: leave data_seq alone.
            _ring_bell(self.bell)
            return
        # Only the producer writes data_seq, so a plain increment is atomic enough.
        self._data_seq.value = (self._data_seq.value + 1) & 0xFFFFFFFF
        _futex_wake(self._data_seq_addr, 1)

    def write(self, payload, timeout: float | None = None) -> None:
        """Publish one payload, waiting for room (spin, then futex on space_seq).

        Raises RingTimeout if ``timeout`` seconds pass without room."""
        if self.try_write(payload):
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        yield_ = os.sched_yield
        for _ in range(self.spin):
            yield_()
            if self.try_write(payload):
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise RingTimeout(f"ring {self.index}: no room for {len(payload)} bytes within {timeout}s")
        sleeping = self._producer_sleeping
        while True:
            seq = self._space_seq.value
            sleeping.value = 1
            _fence()
            try:
                if self.try_write(payload):
                    return
                if deadline is None:
                    remaining = None
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RingTimeout(
                            f"ring {self.index}: no room for {len(payload)} bytes within {timeout}s"
                        )
                _futex_wait(self._space_seq_addr, seq, remaining)
            finally:
                sleeping.value = 0

    # -- consumer

    def _raise_poisoned(self):
        if self._sticky_poison is not None:
            raise RingPoisoned(self._sticky_poison[0], 0, self._sticky_poison[1])
        tail = self._tail.value
        off = tail % self.capacity
        # A misaligned tail may leave fewer than 4 bytes before the end of the data area.
        (ln,) = _U32.unpack_from(self._mm, self._data + off) if off <= self.capacity - 4 else (0,)
        raise RingPoisoned(off, ln)

    def _poison(self, off: int, ln: int):
        self._poisoned.value = 1
        raise RingPoisoned(off, ln)

    def _poison_positions(self, off: int, head: int, tail: int):
        """Poison the ring over positions that cannot hold.  Both sides check, before
        computing with the other side's word, that tail is not ahead of head, at most
        ``capacity`` bytes behind it, both are multiples of 8 (every record header then
        lies whole inside the data area) and head is far enough below 2**64 not to
        overflow (``_max_head``); the Swift side's RingMemory.positionsHold is the same."""
        self._sticky_poison = (
            off,
            f"head {head} and tail {tail} cannot both hold (tail ahead of head, more than "
            f"the capacity apart, not 8-byte aligned, or near overflow)",
        )
        self._poisoned.value = 1
        _fence()
        # Whichever side sleeps on this ring must look again and learn.
        if self._consumer_sleeping.value:
            self._wake_consumer()
        if self._producer_sleeping.value:
            self._wake_producer()
        raise RingPoisoned(off, 0, self._sticky_poison[1])

    def try_read(self):
        """Return the next payload (bytes), or None if the ring is empty.

        Raises CorruptedData (record skipped, ring usable) or RingPoisoned (a record
        that cannot be delimited, or a head word the producer cannot have written)."""
        if self._poisoned.value:
            self._raise_poisoned()
        cap = self.capacity
        tail_obj = self._tail
        tail = start_tail = tail_obj.value
        mm = self._mm
        # At most three rounds: a wrap marker moves tail to offset 0, where another poisons.
        while True:
            head = self._head.value  # acquire (TSO)
            if tail == head:
                if tail != start_tail:  # consumed only wrap markers: still freed space
                    _fence()
                    if self._producer_sleeping.value:
                        self._wake_producer()
                return None
            off = tail % cap
            # head is the producer's word: positions that cannot hold poison the ring.
            if tail > head or head - tail > cap or (head | tail) & 7 or head > self._max_head:
                self._poison_positions(off, head, tail)
            p = self._data + off
            ln, stored = _REC_HDR.unpack_from(mm, p)
            contig = cap - off
            if ln == WRAP_MARKER:
                if contig >= self._max_record or tail + contig > head:
                    self._poison(off, ln)
                tail += contig
                tail_obj.value = tail
                continue
            rec = 8 + ((ln + 7) & ~7)
            if ln > self.max_payload or rec > contig or tail + rec > head:
                self._poison(off, ln)
            data = mm[p + 8 : p + 8 + ln]  # copy out before releasing the space
            computed = zlib.crc32(data)
            tail_obj.value = tail + rec  # release store (TSO)
            _fence()
            if self._producer_sleeping.value:
                self._wake_producer()
            if computed != stored:
                raise CorruptedData(off, stored, computed)
            return data

    def _wake_producer(self) -> None:
        self._producer_sleeping.value = 0  # taken down by the waker, as in _wake_consumer
        # Only the consumer writes space_seq.
        self._space_seq.value = (self._space_seq.value + 1) & 0xFFFFFFFF
        _futex_wake(self._space_seq_addr, 1)

    def read(self, timeout: float | None = None) -> bytes:
        """Return the next payload, waiting for one (spin, then futex on data_seq).

        Raises RingTimeout, CorruptedData, RingPoisoned."""
        data = self.try_read()
        if data is not None:
            return data
        deadline = None if timeout is None else time.monotonic() + timeout
        yield_ = os.sched_yield
        for _ in range(self.spin):
            yield_()
            data = self.try_read()
            if data is not None:
                return data
            if deadline is not None and time.monotonic() >= deadline:
                raise RingTimeout(f"ring {self.index}: no message within {timeout}s")
        sleeping = self._consumer_sleeping
        while True:
            seq = self._data_seq.value
            sleeping.value = 1
            _fence()
            try:
                data = self.try_read()
                if data is not None:
                    return data
                if deadline is None:
                    remaining = None
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RingTimeout(f"ring {self.index}: no message within {timeout}s")
                _futex_wait(self._data_seq_addr, seq, remaining)
            finally:
                sleeping.value = 0


if sys.byteorder != "little":  # pragma: no cover
    raise ImportError("aetherless.ring: the ctypes word access assumes a little-endian host")
