#include "aether_ipc.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

int aether_eventfd_create(void) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

int aether_eventfd_ring(int fd) {
    const uint64_t one = 1;
    for (;;) {
        if (write(fd, &one, sizeof one) == (ssize_t)sizeof one) return 0;
        if (errno == EINTR) continue;
        // A counter at its maximum already has a wake-up pending.
        return errno == EAGAIN ? 0 : -errno;
    }
}

int aether_eventfd_drain(int fd) {
    uint64_t count;
    for (;;) {
        if (read(fd, &count, sizeof count) == (ssize_t)sizeof count) return 0;
        if (errno == EINTR) continue;
        return errno == EAGAIN ? 0 : -errno;
    }
}
