#ifndef AETHER_IPC_H
#define AETHER_IPC_H

// C helpers for the shared-memory ring that Swift cannot express directly: the futex system
// call (glibc's syscall() is variadic, which Swift does not import) and CRC-32 kernels that need
// compiler intrinsics.

#include <stddef.h>
#include <stdint.h>

/// futex(FUTEX_WAIT) on a word shared between processes (no FUTEX_PRIVATE_FLAG).
/// Sleeps while *word == expected, at most timeout_ns nanoseconds (negative = no limit).
/// Returns 0 when woken (or the word had changed: EAGAIN is folded into 0), else -errno
/// (-ETIMEDOUT, -EINTR, ...).
int aether_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);

/// futex(FUTEX_WAKE): wakes up to `count` waiters. Returns the number woken or -errno.
int aether_futex_wake(uint32_t *word, int count);

/// An eventfd (close-on-exec, non-blocking) for a ring's bell: a producer that was handed one
/// wakes its consumer by writing it, so the consumer can wait in epoll (docs/shm-layout.md,
/// "Bell"). Returns the descriptor or -errno.
int aether_eventfd_create(void);

/// Adds 1 to the eventfd's counter. Returns 0, or -errno (a saturated counter is 0: a wake-up is
/// pending already).
int aether_eventfd_ring(int fd);

/// Reads the eventfd's counter back to 0. Returns 0 (also when it was 0 already), or -errno.
int aether_eventfd_drain(int fd);

/// CRC-32/ISO-HDLC (zlib's crc32) continuing from `crc` (0 to start), portable slicing-by-8.
uint32_t aether_crc32_slice8(uint32_t crc, const void *data, size_t length);

/// The same CRC computed with carry-less multiplication (PCLMULQDQ) folding; requires
/// aether_crc32_has_pclmul() to be true.
uint32_t aether_crc32_pclmul(uint32_t crc, const void *data, size_t length);

/// Whether this CPU has PCLMULQDQ and SSE4.1.
int aether_crc32_has_pclmul(void);

/// The same CRC folded 256 bits at a time (VPCLMULQDQ + AVX2); requires aether_crc32_has_vpclmul().
uint32_t aether_crc32_vpclmul(uint32_t crc, const void *data, size_t length);

/// Whether this CPU has VPCLMULQDQ and AVX2 (and PCLMULQDQ).
int aether_crc32_has_vpclmul(void);

/// Copies `length` bytes from `source` to `destination` (the two must not overlap) and returns
/// the CRC of the bytes stored, continuing from `crc`, in one pass over the data: each vector is
/// loaded once, stored, and folded from the same register. Same requirements as the
/// checksum-only function of the same kernel; `_slice8` (copy, then checksum) runs anywhere.
uint32_t aether_crc32_copy_vpclmul(uint32_t crc, void *destination, const void *source, size_t length);
uint32_t aether_crc32_copy_pclmul(uint32_t crc, void *destination, const void *source, size_t length);
uint32_t aether_crc32_copy_slice8(uint32_t crc, void *destination, const void *source, size_t length);

#endif
