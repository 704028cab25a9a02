#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <termios.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <linux/capability.h>
#include <linux/perf_event.h>
#include <pthread.h>
#include <sched.h>
#include <spawn.h>
#include <netinet/in.h>
#include <linux/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <string.h>
#include <unistd.h>

#include "aether_system.h"

int aether_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

void aether_set_thread_name(const char *name) {
    char short_name[16];
    strncpy(short_name, name, sizeof short_name - 1);
    short_name[sizeof short_name - 1] = 0;
    pthread_setname_np(pthread_self(), short_name);
}

int aether_spawn_close_from(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

int aether_become_child_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); }

int aether_make_not_dumpable(void) { return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0); }

int aether_unshare_pid_namespace(void) { return unshare(CLONE_NEWPID); }

int aether_drop_all_capabilities(void) {
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return -1;
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    return (int)syscall(SYS_capset, &header, data);
}

int aether_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int aether_pidfd_getfd(int pidfd, int fd) { return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0); }

int aether_pin_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

int aether_open_idle_perf_task_event(void) {
    struct perf_event_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.type = PERF_TYPE_SOFTWARE;
    attr.size = sizeof attr;
    attr.config = PERF_COUNT_SW_DUMMY;
    attr.disabled = 1;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    return (int)syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
}

int aether_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int aether_epoll_add_readable(int epoll, int fd) {
    struct epoll_event event;
    memset(&event, 0, sizeof event);
    event.events = EPOLLIN;
    event.data.fd = fd;
    return epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
}

int aether_epoll_remove(int epoll, int fd) { return epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL); }

int aether_epoll_wait_descriptors(int epoll, int *fds, int capacity, int timeout_ms) {
    struct epoll_event events[64];
    if (capacity > 64) capacity = 64;
    int ready = epoll_wait(epoll, events, capacity, timeout_ms);
    for (int i = 0; i < ready; i++) fds[i] = events[i].data.fd;
    return ready;
}

int aether_tcp_activity(
    int fd, int *state, unsigned *since_received_ms, unsigned *since_sent_ms, unsigned long long *bytes_received,
    unsigned long long *bytes_sent) {
    struct tcp_info info;
    socklen_t length = sizeof info;
    memset(&info, 0, sizeof info);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0) return -1;
    *state = info.tcpi_state;
    *since_received_ms = info.tcpi_last_data_recv;
    *since_sent_ms = info.tcpi_last_data_sent;
    *bytes_received = info.tcpi_bytes_received;
    *bytes_sent = info.tcpi_bytes_sent;
    return 0;
}

// MARK: namespaced spawn

struct NamespacedSpawn {
    const char *path;
    char *const *argv;
    char *const *envp;
    const int *inherit;
    int count;
    volatile int error;
};

// Runs on its own stack in the parent's memory (CLONE_VM) until execve: system calls only.
static int namespacedChild(void *argument) {
    struct NamespacedSpawn *spawn = argument;
    sigset_t none;
    sigemptyset(&none);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    for (int signal = 1; signal < 65; signal++) syscall(SYS_rt_sigaction, signal, &action, NULL, 8);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);
    if (syscall(SYS_setsid) < 0) goto failed;
    // Park the sources above all of them, then put them in place: a source numbered below
    // `count` is not overwritten before it is copied. (Just above the highest source, so a low
    // RLIMIT_NOFILE still has room.)
    int parking = spawn->count;
    for (int index = 0; index < spawn->count; index++) {
        if (spawn->inherit[index] >= parking) parking = spawn->inherit[index] + 1;
    }
    for (int index = 0; index < spawn->count; index++) {
        if (syscall(SYS_dup3, spawn->inherit[index], parking + index, 0) < 0) goto failed;
    }
    for (int index = 0; index < spawn->count; index++) {
        if (syscall(SYS_dup3, parking + index, index, 0) < 0) goto failed;
    }
    if (syscall(SYS_close_range, spawn->count, ~0U, 0) < 0) goto failed;
    syscall(SYS_execve, spawn->path, spawn->argv, spawn->envp);
failed:
    spawn->error = errno ? errno : ENOEXEC;
    syscall(SYS_exit, 127);
    return 127;
}

int aether_spawn_in_namespaces(
    const char *path, char *const argv[], char *const envp[], const int *inherit, int count, int namespaces) {
    if (count > 64) {
        errno = EINVAL;
        return -1;
    }
    struct NamespacedSpawn spawn = {path, argv, envp, inherit, count, 0};
    size_t size = 64 * 1024;
    void *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -1;
    // No handler of ours may run in the child (it shares our memory until it execs, and
    // CLONE_VFORK holds this thread until then): every signal blocked around the clone.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &previous);
    int pid = clone(namespacedChild, (char *)stack + size, CLONE_VM | CLONE_VFORK | SIGCHLD | namespaces, &spawn);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    munmap(stack, size);
    if (pid < 0) {
        errno = saved;
        return -1;
    }
    if (spawn.error) {
        int status;
        waitpid(pid, &status, 0);
        errno = spawn.error;
        return -1;
    }
    return pid;
}

// MARK: descriptor passing

long aether_send_with_descriptors(int socket, const void *bytes, unsigned long length, const int *fds, int count) {
    if (count < 1 || count > 8) {
        errno = EINVAL;
        return -1;
    }
    struct iovec vector = {(void *)bytes, length};
    union {
        char buffer[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message = {0};
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count);
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
    memcpy(CMSG_DATA(header), fds, sizeof(int) * (size_t)count);
    return sendmsg(socket, &message, MSG_NOSIGNAL);
}

long aether_receive_with_descriptors(
    int socket, void *bytes, unsigned long capacity, int *fds, int room, int *count) {
    *count = 0;
    struct iovec vector = {bytes, capacity};
    union {
        char buffer[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } control;
    struct msghdr message = {0};
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof control.buffer;
    long received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    if (received < 0) return -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int passed = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *descriptors = (int *)CMSG_DATA(header);
        for (int index = 0; index < passed; index++) {
            if (*count < room) fds[(*count)++] = descriptors[index];
            else close(descriptors[index]);
        }
    }
    return received;
}

int aether_pass_credentials(int socket) {
    int on = 1;
    return setsockopt(socket, SOL_SOCKET, SO_PASSCRED, &on, sizeof on);
}

long aether_receive_with_sender(int socket, void *bytes, unsigned long capacity, int *pid) {
    *pid = -1;
    struct iovec vector = {bytes, capacity};
    union {
        char buffer[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } control;
    struct msghdr message = {0};
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    message.msg_controllen = sizeof control.buffer;
    long received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (received < 0) return -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET) continue;
        if (header->cmsg_type == SCM_CREDENTIALS && header->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
            struct ucred credentials;
            memcpy(&credentials, CMSG_DATA(header), sizeof credentials);
            *pid = credentials.pid;
        } else if (header->cmsg_type == SCM_RIGHTS) {
            int passed = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *descriptors = (int *)CMSG_DATA(header);
            for (int index = 0; index < passed; index++) close(descriptors[index]);
        }
    }
    return received;
}

int aether_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

// Each thread's unread bytes of one getrandom call (see aether_random_bytes).
static __thread unsigned char random_pool[4096];
static __thread unsigned long random_left;
static pthread_once_t random_fork_once = PTHREAD_ONCE_INIT;

// A forked child must not hand out the bytes its parent will also hand out.
static void random_forget(void) { random_left = 0; }
static void random_watch_forks(void) { pthread_atfork(NULL, NULL, random_forget); }

long aether_random_bytes(void *bytes, unsigned long length) {
    if (length > sizeof random_pool) return getrandom(bytes, length, 0);
    pthread_once(&random_fork_once, random_watch_forks);
    if (random_left < length) {
        if (getrandom(random_pool, sizeof random_pool, 0) != (long)sizeof random_pool) {
            random_left = 0;
            return getrandom(bytes, length, 0);
        }
        random_left = sizeof random_pool;
    }
    unsigned char *from = random_pool + sizeof random_pool - random_left;
    memcpy(bytes, from, length);
    explicit_bzero(from, length);
    random_left -= length;
    return (long)length;
}

// MARK: the sandbox's syscall filter

// What no function needs, and what would let it reach past its confinement (SECURITY.md):
// aether-sandbox refuses these with EPERM, and the orchestrator counts the refusals.
static const struct {
    int number;
    const char *name;
} refusedCalls[] = {
    {SYS_ptrace, "ptrace"}, {SYS_process_vm_readv, "process_vm_readv"},
    {SYS_process_vm_writev, "process_vm_writev"}, {SYS_kcmp, "kcmp"}, {SYS_pidfd_getfd, "pidfd_getfd"},
    {SYS_mount, "mount"}, {SYS_umount2, "umount2"}, {SYS_pivot_root, "pivot_root"}, {SYS_chroot, "chroot"},
    {SYS_move_mount, "move_mount"}, {SYS_open_tree, "open_tree"}, {SYS_fsopen, "fsopen"},
    {SYS_fsconfig, "fsconfig"}, {SYS_fsmount, "fsmount"}, {SYS_fspick, "fspick"},
    {SYS_mount_setattr, "mount_setattr"}, {SYS_setns, "setns"}, {SYS_unshare, "unshare"}, {SYS_bpf, "bpf"},
    {SYS_perf_event_open, "perf_event_open"}, {SYS_userfaultfd, "userfaultfd"}, {SYS_kexec_load, "kexec_load"},
    {SYS_kexec_file_load, "kexec_file_load"}, {SYS_reboot, "reboot"}, {SYS_init_module, "init_module"},
    {SYS_finit_module, "finit_module"}, {SYS_delete_module, "delete_module"}, {SYS_keyctl, "keyctl"},
    {SYS_add_key, "add_key"}, {SYS_request_key, "request_key"}, {SYS_swapon, "swapon"},
    {SYS_swapoff, "swapoff"}, {SYS_acct, "acct"}, {SYS_quotactl, "quotactl"}, {SYS_syslog, "syslog"},
    {SYS_settimeofday, "settimeofday"}, {SYS_clock_settime, "clock_settime"},
    {SYS_clock_adjtime, "clock_adjtime"}, {SYS_adjtimex, "adjtimex"},
    {SYS_open_by_handle_at, "open_by_handle_at"}, {SYS_name_to_handle_at, "name_to_handle_at"},
    {SYS_lookup_dcookie, "lookup_dcookie"}, {SYS_fanotify_init, "fanotify_init"},
#ifdef SYS_iopl
    {SYS_iopl, "iopl"}, {SYS_ioperm, "ioperm"},
#endif
};

int aether_refused_call_count(void) { return (int)(sizeof refusedCalls / sizeof *refusedCalls); }

int aether_refused_call_number(int index) { return refusedCalls[index].number; }

const char *aether_refused_call_name(int index) { return refusedCalls[index].name; }

int aether_clone_syscall_number(void) { return SYS_clone; }

int aether_terminal_size(int fd, int *rows, int *columns) {
    struct winsize size;
    if (ioctl(fd, TIOCGWINSZ, &size) != 0) return -1;
    *rows = size.ws_row;
    *columns = size.ws_col;
    return 0;
}

static int termination_pipe_write = -1;

static void termination_caught(int signal) {
    int saved = errno;
    unsigned char number = (unsigned char)signal;
    (void)!write(termination_pipe_write, &number, 1);
    errno = saved;
}

int aether_termination_pipe(void) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return -1;
    termination_pipe_write = fds[1];
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = termination_caught;
    sigemptyset(&action.sa_mask);
    int signals[] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) {
        if (sigaction(signals[i], &action, NULL) != 0) return -1;
    }
    return fds[0];
}

int aether_terminal_keys_mode(int fd, void *saved, unsigned long saved_size) {
    struct termios settings;
    if (saved_size < sizeof settings) {
        errno = EINVAL;
        return -1;
    }
    if (tcgetattr(fd, &settings) != 0) return -1;
    memcpy(saved, &settings, sizeof settings);
    settings.c_lflag &= ~(ICANON | ECHO);
    settings.c_cc[VMIN] = 1;
    settings.c_cc[VTIME] = 0;
    return tcsetattr(fd, TCSANOW, &settings);
}

int aether_terminal_restore(int fd, const void *saved, unsigned long saved_size) {
    struct termios settings;
    if (saved_size < sizeof settings) {
        errno = EINVAL;
        return -1;
    }
    memcpy(&settings, saved, sizeof settings);
    return tcsetattr(fd, TCSANOW, &settings);
}
