#include "aether_ipc.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int aether_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    struct timespec timeout;
    struct timespec *timeout_pointer = NULL;
    if (timeout_ns >= 0) {
        timeout.tv_sec = (time_t)(timeout_ns / 1000000000);
        timeout.tv_nsec = (long)(timeout_ns % 1000000000);
        timeout_pointer = &timeout;
    }
    long result = syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout_pointer, NULL, 0);
    if (result == 0) return 0;
    if (errno == EAGAIN) return 0;  // the word no longer held `expected`: nothing to wait for
    return -errno;
}

int aether_futex_wake(uint32_t *word, int count) {
    long result = syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
    return result < 0 ? -errno : (int)result;
}
