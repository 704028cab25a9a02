#ifndef AETHER_SYSTEM_H
#define AETHER_SYSTEM_H

/// GNU extensions Swift's Glibc module does not expose (it is built without _GNU_SOURCE).

/// pipe2(fds, O_CLOEXEC): both ends close-on-exec from the start, so a handler spawned on
/// another thread never inherits another handler's pipe.
int aether_pipe_cloexec(int fds[2]);

#include <linux/sched.h>
#include <spawn.h>

/// posix_spawn_file_actions_addclosefrom_np(actions, from): the child closes every descriptor
/// from `from` up, whatever its close-on-exec flag (sockets SwiftNIO opened included).
int aether_spawn_close_from(posix_spawn_file_actions_t *actions, int from);

/// prctl(PR_SET_CHILD_SUBREAPER, 1): orphaned descendants (a process criu restored detached)
/// are re-parented to us, so we can wait for them. Returns 0 or -1 with errno.
int aether_become_child_subreaper(void);

/// prctl(PR_SET_DUMPABLE, 0): /proc/PID/mem and ptrace of this process (and of what it forks)
/// are closed to processes of the same uid. -1 with errno.
int aether_make_not_dumpable(void);

/// unshare(CLONE_NEWPID): the caller's next child is PID 1 of a new PID namespace (a fork
/// template's copies). 0 or -1 with errno.
int aether_unshare_pid_namespace(void);

/// Clears every capability of the calling thread (ambient, effective, permitted, inheritable):
/// a fork template's copy before it runs handler code. 0 or -1 with errno.
int aether_drop_all_capabilities(void);

/// Names the calling thread (at most 15 bytes are kept), for `top -H` and debuggers.
void aether_set_thread_name(const char *name);

/// pidfd_open(pid, 0): a descriptor naming the process (no PID reuse race). -1 with errno.
int aether_pidfd_open(int pid);

/// pidfd_getfd(pidfd, fd, 0): a copy of another process's descriptor `fd` (needs
/// PTRACE_MODE_ATTACH_REALCREDS over it, which root has). -1 with errno.
int aether_pidfd_getfd(int pidfd, int fd);

/// sched_setaffinity for the calling thread: run only on `cpu`. 0 or -1 with errno.
int aether_pin_thread(int cpu);

/// perf_event_open of a disabled software dummy event on the calling thread (counts nothing).
/// Returns its descriptor (close-on-exec), or -1 with errno.
int aether_open_idle_perf_task_event(void);

/// An epoll set for the child reaper (close-on-exec). -1 with errno.
int aether_epoll_create(void);

/// Adds `fd` to the epoll set for readability; the event carries `fd` back. 0 or -1 with errno.
int aether_epoll_add_readable(int epoll, int fd);

/// Removes `fd` from the epoll set. 0 or -1 with errno.
int aether_epoll_remove(int epoll, int fd);

/// epoll_wait: writes the descriptors of up to `capacity` ready events to `fds`; returns how
/// many, or -1 with errno. `timeout_ms` -1 waits for ever.
int aether_epoll_wait_descriptors(int epoll, int *fds, int capacity, int timeout_ms);

/// TCP_INFO of a connected TCP socket: its state (TCP_ESTABLISHED is 1), the milliseconds since
/// it last received and last sent data (jiffy resolution), and the bytes it has received and
/// sent. 0 or -1 with errno.
int aether_tcp_activity(
    int fd, int *state, unsigned *since_received_ms, unsigned *since_sent_ms, unsigned long long *bytes_received,
    unsigned long long *bytes_sent);

/// Starts `path` (argv, envp) as the first process of new namespaces: clone(2) with `namespaces`
/// (CLONE_NEWPID | CLONE_NEWNS | ...) and CLONE_VFORK|CLONE_VM, like posix_spawn. The child
/// leads a new session (and process group), has default signal dispositions and an empty signal
/// mask, gets `inherit[i]` as descriptor i (0, 1, 2, 3, ...; `count` of them) and nothing else.
/// Returns the child's PID (as we see it), or -1 with errno (the exec's errno if that failed).
int aether_spawn_in_namespaces(
    const char *path, char *const argv[], char *const envp[], const int *inherit, int count, int namespaces);

/// sendmsg of `length` bytes with `count` (1 to 8) descriptors attached (SCM_RIGHTS);
/// MSG_NOSIGNAL. Returns the bytes sent or -1 with errno.
long aether_send_with_descriptors(int socket, const void *bytes, unsigned long length, const int *fds, int count);

/// recvmsg of up to `capacity` bytes; descriptors passed with them (SCM_RIGHTS, close-on-exec)
/// are stored in `fds`, in order, up to `room` of them (`*count` says how many; extra ones are
/// closed). Returns the bytes read or -1 with errno.
long aether_receive_with_descriptors(
    int socket, void *bytes, unsigned long capacity, int *fds, int room, int *count);

/// setsockopt(SO_PASSCRED): every message received on `socket` carries its sender's credentials
/// (as the kernel saw them, in our PID namespace). -1 with errno.
int aether_pass_credentials(int socket);

/// recvmsg (non-blocking) of up to `capacity` bytes from a socket with SO_PASSCRED; the
/// sender's PID (in our PID namespace) is stored in `*pid` (-1 if none came); descriptors passed
/// along are closed. Returns the bytes read or -1 with errno.
long aether_receive_with_sender(int socket, void *bytes, unsigned long capacity, int *pid);

/// memfd_create(name, MFD_CLOEXEC): an anonymous shared-memory file. -1 with errno.
int aether_memfd_create(const char *name);

/// `length` bytes from the kernel's generator (getrandom, which Glibc's Swift module does not
/// export), taken from this thread's pool of one 4 KiB
/// getrandom call (refilled when it runs out; a forked child starts with an empty pool), so
/// that a caller on a hot path makes a system call once in many calls. Handed-out bytes are
/// wiped from the pool. The bytes given, or -1 with errno.
long aether_random_bytes(void *bytes, unsigned long length);

/// The system calls the sandbox's filter refuses with EPERM (SECURITY.md): how many, and each
/// one's number and name. (clone is refused only with namespace flags; see
/// aether_clone_syscall_number.)
int aether_refused_call_count(void);
int aether_refused_call_number(int index);
const char *aether_refused_call_name(int index);
int aether_clone_syscall_number(void);

/// The terminal's size (ioctl TIOCGWINSZ, variadic in C): 0, or -1 with errno.
int aether_terminal_size(int fd, int *rows, int *columns);

/// Catches SIGINT, SIGTERM and SIGHUP (on whichever thread they land) by writing the signal's
/// number to a pipe; returns the pipe's read end (close-on-exec, non-blocking), or -1 with errno.
/// `aether top` polls it beside stdin, so it can put the terminal back before it ends.
int aether_termination_pipe(void);

/// Turns off the terminal's line editing and echo (keys arrive one by one; Ctrl-C still signals),
/// saving the settings to restore: 0, or -1 with errno.
int aether_terminal_keys_mode(int fd, void *saved, unsigned long saved_size);

/// Puts back settings saved by aether_terminal_keys_mode.
int aether_terminal_restore(int fd, const void *saved, unsigned long saved_size);

#endif
