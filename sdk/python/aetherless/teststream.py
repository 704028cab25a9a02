"""Deterministic test message stream of docs/shm-layout.md ("Test message stream").

    state = seed (u64)
    block = le64(next()) for 16384 successive next() calls   # 131072 bytes, first
    for i in 0 ..< count:
        x = next(); len = x % (max_len + 1); start = (x >> 32) % 65536
        payload = block[start : start + len]; if len >= 8: payload[0:8] = le64(i)

Only integer arithmetic per message and C-level slicing/concatenation per
payload, so generating and verifying 10**6 messages is cheap.
"""

from __future__ import annotations

import struct

__all__ = ["MASK64", "BLOCK_SIZE", "MAX_LEN", "splitmix64", "TestStream", "first_difference"]

MASK64 = 0xFFFFFFFFFFFFFFFF
GAMMA = 0x9E3779B97F4A7C15
BLOCK_WORDS = 16384
BLOCK_SIZE = BLOCK_WORDS * 8  # 131072
MAX_LEN = 65536

_LE64 = struct.Struct("<Q")


def splitmix64(state: int) -> tuple[int, int]:
    """One splitmix64 step: returns (new_state, output)."""
    state = (state + GAMMA) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def first_difference(a, b) -> int:
    """Index of the first differing byte of a and b (or min(len) if one is a prefix); -1 if equal."""
    a = memoryview(a).cast("B")
    b = memoryview(b).cast("B")
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return -1 if len(a) == len(b) else n
    lo, hi = 0, n  # invariant: a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class TestStream:
    """Iterator over the stream's payloads (bytes).  ``index`` is the index of the
    next message to be produced."""

    __test__ = False  # not a unittest/pytest test class

    def __init__(self, seed: int, max_len: int = MAX_LEN):
        if not 0 <= max_len <= MAX_LEN:
            raise ValueError(f"max_len must be in [0, {MAX_LEN}]")
        self.seed = seed & MASK64
        self.max_len = max_len
        state = self.seed
        words = []
        append = words.append
        for _ in range(BLOCK_WORDS):
            state, out = splitmix64(state)
            append(out)
        self.block = struct.pack(f"<{BLOCK_WORDS}Q", *words)
        self._state = state
        self.index = 0

    def next_spec(self) -> tuple[int, int, int]:
        """Advance by one message and return (index, len, start)."""
        state = (self._state + GAMMA) & MASK64
        self._state = state
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        x = z ^ (z >> 31)
        i = self.index
        self.index = i + 1
        return i, x % (self.max_len + 1), (x >> 32) & 0xFFFF

    def payload(self, index: int, length: int, start: int) -> bytes:
        if length >= 8:
            return _LE64.pack(index) + self.block[start + 8 : start + length]
        return self.block[start : start + length]

    def next_message(self) -> bytes:
        return self.payload(*self.next_spec())

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        return self.payload(*self.next_spec())

    def take(self, count: int):
        for _ in range(count):
            yield self.payload(*self.next_spec())
