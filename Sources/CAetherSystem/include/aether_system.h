#ifndef AETHER_SYSTEM_H
#define AETHER_SYSTEM_H

/// GNU extensions Swift's Glibc module does not expose (it is built without _GNU_SOURCE).

/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start, so a handler spawned on
/// another thread never inherits another handler's pipe.
int aether_pipe_cloexec(int fds[2]);

/// Names the calling thread (at most 15 bytes are kept), for `top -H` and debuggers.
void aether_set_thread_name(const char *name);

#endif
