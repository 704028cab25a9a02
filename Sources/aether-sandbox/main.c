// aether-sandbox: puts one handler instance (or a criu restore service) into its confinement,
// then execs it. Written in C because everything here runs between fork and exec of a
// multi-threaded orchestrator, and because every instance start pays for this program's start
// (a C binary with libc only: well under a millisecond).
//
// Modes (docs/handler-protocol.md "Confinement", SECURITY.md):
//
//   aether-sandbox run [options] -- PROGRAM ARG...
//       Started by the orchestrator as PID 1 of new PID, mount and IPC (and, with network: none,
//       network) namespaces (clone(2) made them). Joins the instance's cgroups, builds the
//       instance's file system view, drops to the function's uid/gid with no capabilities and
//       no_new_privs, installs the syscall filter, and execs PROGRAM (with --init: forks it and
//       stays as a minimal init that forwards signals and reaps).
//
//   aether-sandbox restore-slot [options] -- CRIU swrk FD
//       Started in the host's namespaces. Makes a private mount namespace holding the same
//       view's pieces (a read-only root, a fresh /tmp, /dev, /run) that criu restore binds into
//       a restored copy (criu's --root and --external mnt[KEY]:PATH), joins the cgroups, and
//       execs criu swrk. Each slot restores one copy, so each copy gets fresh tmpfs pieces.
//
//   aether-sandbox real-uid UID GID -- PROGRAM ARG...
//       Sets the real uid/gid (effective stays root, capabilities kept) and execs PROGRAM: criu
//       dump reads the target's rlimits with prlimit(2), which without CAP_SYS_RESOURCE needs
//       the caller's real ids to be the target's (../shared/notes/confinement.md, item 1).
//
// Options of run and restore-slot:
//   --cgroup DIR        join DIR (writes to DIR/cgroup.procs); repeatable
//   --staging DIR       an existing empty folder the private staging tmpfs is mounted on
//   --tmp-size BYTES    size of the staging tmpfs (the instance's /tmp and /dev/shm together)
//   --bind PATH         make host PATH visible read-only at the same path; repeatable
//   --bind-as SOURCE TARGET   host SOURCE visible read-only at TARGET (a link's real folder at
//                       the link's path)
//   --secrets DIR       make DIR visible read-only at /run/secrets
//   --cover DIR         hide host folder DIR behind an empty read-only folder of the view's own
//                       (holding only mount points for the binds below it): a bind under a
//                       folder the function's identity cannot enter (a checkout under /root)
//                       is reachable, and nothing else in DIR is; repeatable
// Options of run only:
//   --uid UID --gid GID the identity the program runs as
//   --cwd DIR           working folder (default /)
//   --network-none      bring lo up (clone gave a new network namespace)
//   --init              fork PROGRAM and stay as its init
//   --fork-template     PROGRAM is a `snapshot: fork` template: it runs in a user namespace of
//                       its own (mapping only its uid and gid) holding CAP_SYS_ADMIN there and
//                       nothing else, and the filter lets it call unshare(CLONE_NEWPID), so that
//                       each copy it forks is PID 1 of a PID namespace of its own (the SDKs drop
//                       every capability in the copy before handler code runs). Every other
//                       namespace stays owned by the host's user namespace: the capability
//                       reaches none of them (no mount, no hostname, no network change).
//   --search-path       look PROGRAM up in PATH
//
// Any failure prints "aether-sandbox: WHAT: REASON" on stderr and exits with status 111.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aether_system.h"

enum { FAILED = 111, MAX_LIST = 64 };

static void fail(const char *what, const char *detail) {
    dprintf(2, "aether-sandbox: %s: %s\n", what, detail ? detail : strerror(errno));
    _exit(FAILED);
}

static void failPath(const char *what, const char *path) {
    int saved = errno;
    dprintf(2, "aether-sandbox: %s %s: %s\n", what, path, strerror(saved));
    _exit(FAILED);
}

struct Options {
    const char *cgroups[MAX_LIST];
    int cgroupCount;
    // Where each bind appears in the view, and what it shows (the same path, or with --bind-as
    // another one: a symbolic link's real folder at the link's path).
    const char *binds[MAX_LIST];
    const char *bindSources[MAX_LIST];
    int bindCount;
    const char *staging;
    unsigned long long tmpSize;
    const char *secrets;
    // Host folders replaced by the view's own folders (--cover), each staged at cover-N.
    const char *covers[MAX_LIST];
    int coverCount;
    long uid, gid;
    const char *cwd;
    int networkNone, init, searchPath, forkTemplate;
    char **program;
};

static unsigned long long number(const char *text, const char *option) {
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || !end || *end || end == text) fail(option, "not a number");
    return value;
}

static void parse(int argc, char **argv, int first, struct Options *options) {
    memset(options, 0, sizeof *options);
    options->uid = options->gid = -1;
    options->tmpSize = 64ull << 20;
    options->cwd = "/";
    for (int index = first; index < argc; index++) {
        const char *option = argv[index];
        const char *value = index + 1 < argc ? argv[index + 1] : NULL;
        if (strcmp(option, "--") == 0) {
            options->program = &argv[index + 1];
            if (!options->program[0]) fail("usage", "no program after --");
            return;
        }
        if (strcmp(option, "--network-none") == 0) { options->networkNone = 1; continue; }
        if (strcmp(option, "--init") == 0) { options->init = 1; continue; }
        if (strcmp(option, "--fork-template") == 0) { options->forkTemplate = 1; continue; }
        if (strcmp(option, "--search-path") == 0) { options->searchPath = 1; continue; }
        if (!value) fail(option, "needs a value");
        index++;
        if (strcmp(option, "--cgroup") == 0) {
            if (options->cgroupCount == MAX_LIST) fail(option, "too many");
            options->cgroups[options->cgroupCount++] = value;
        } else if (strcmp(option, "--bind") == 0 || strcmp(option, "--bind-as") == 0) {
            if (options->bindCount == MAX_LIST) fail(option, "too many");
            const char *target = value;
            if (strcmp(option, "--bind-as") == 0) {
                if (index + 1 >= argc) fail(option, "needs SOURCE and TARGET");
                target = argv[++index];
            }
            if (value[0] != '/' || target[0] != '/') fail(option, "not an absolute path");
            options->bindSources[options->bindCount] = value;
            options->binds[options->bindCount++] = target;
        } else if (strcmp(option, "--staging") == 0) {
            options->staging = value;
        } else if (strcmp(option, "--tmp-size") == 0) {
            options->tmpSize = number(value, option);
        } else if (strcmp(option, "--secrets") == 0) {
            options->secrets = value;
        } else if (strcmp(option, "--cover") == 0) {
            if (options->coverCount == MAX_LIST) fail(option, "too many");
            if (value[0] != '/' || value[1] == 0) fail(option, "not an absolute path below /");
            options->covers[options->coverCount++] = value;
        } else if (strcmp(option, "--uid") == 0) {
            options->uid = (long)number(value, option);
        } else if (strcmp(option, "--gid") == 0) {
            options->gid = (long)number(value, option);
        } else if (strcmp(option, "--cwd") == 0) {
            options->cwd = value;
        } else {
            fail(option, "unknown option");
        }
    }
    fail("usage", "missing -- PROGRAM");
}

// MARK: cgroups

static void joinCgroups(const struct Options *options) {
    char path[4096];
    for (int index = 0; index < options->cgroupCount; index++) {
        snprintf(path, sizeof path, "%s/cgroup.procs", options->cgroups[index]);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0) failPath("cannot open", path);
        if (write(fd, "0", 1) != 1) failPath("cannot join", path);
        close(fd);
    }
}

// MARK: the file system view

static void mountOrFail(const char *source, const char *target, const char *type, unsigned long flags,
                        const char *data) {
    if (mount(source, target, type, flags, data) != 0) {
        int saved = errno;
        dprintf(2, "aether-sandbox: mount %s on %s: %s\n", source ? source : "-", target, strerror(saved));
        _exit(FAILED);
    }
}

static void bindReadOnly(const char *source, const char *target, unsigned long extra) {
    mountOrFail(source, target, NULL, MS_BIND, NULL);
    mountOrFail(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | extra, NULL);
}

static void makeFolder(const char *path, mode_t mode) {
    if (mkdir(path, mode) != 0 && errno != EEXIST) failPath("cannot create", path);
    if (chmod(path, mode) != 0) failPath("cannot chmod", path);
}

// A mount point for `path` (absolute, below `base`): its folders 0755 (mkdir -p), and the last
// component a folder too, or an empty file when `isFolder` is false (a socket bound alone).
static void makeMountPoint(const char *base, const char *path, int isFolder) {
    char buffer[4096];
    snprintf(buffer, sizeof buffer, "%s%s", base, path);
    size_t baseLength = strlen(base);
    for (char *slash = buffer + baseLength + 1; *slash; slash++) {
        if (*slash != '/') continue;
        *slash = 0;
        if (mkdir(buffer, 0755) != 0 && errno != EEXIST) failPath("cannot create a mount point", buffer);
        *slash = '/';
    }
    if (isFolder) {
        if (mkdir(buffer, 0755) != 0 && errno != EEXIST) failPath("cannot create a mount point", buffer);
    } else {
        int fd = open(buffer, O_WRONLY | O_CREAT | O_CLOEXEC, 0444);
        if (fd < 0) failPath("cannot create a mount point", buffer);
        close(fd);
    }
}

static int isFolder(const char *path) {
    struct stat status;
    if (stat(path, &status) != 0) failPath("cannot bind", path);
    return S_ISDIR(status.st_mode);
}

static int isBelow(const char *path, const char *folder) {
    size_t length = strlen(folder);
    return strncmp(path, folder, length) == 0 && (path[length] == '/' || path[length] == 0);
}

// Paths the view covers with its own pieces (/tmp, /run, /dev/shm and every --cover): a bind
// below one of them gets its mount point made in that piece's staging folder (written to
// `piece`), and the prefix is returned; anywhere else the mount point must already exist on the
// host's root, and NULL is returned.
static const char *coveredPrefix(const struct Options *options, const char *path, char *piece, size_t size) {
    static const char *fixed[][2] = {{"/tmp", "/tmp"}, {"/run", "/run"}, {"/dev/shm", "/shm"}};
    for (size_t index = 0; index < sizeof fixed / sizeof *fixed; index++) {
        if (!isBelow(path, fixed[index][0])) continue;
        snprintf(piece, size, "%s%s", options->staging, fixed[index][1]);
        return fixed[index][0];
    }
    for (int index = 0; index < options->coverCount; index++) {
        if (!isBelow(path, options->covers[index])) continue;
        snprintf(piece, size, "%s/cover-%d", options->staging, index);
        return options->covers[index];
    }
    return NULL;
}

static void makeNode(const char *folder, const char *name, unsigned int major, unsigned int minor) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", folder, name);
    if (mknod(path, S_IFCHR | 0666, makedev(major, minor)) != 0) failPath("cannot mknod", path);
    if (chmod(path, 0666) != 0) failPath("cannot chmod", path);
}

// The staging tmpfs: root (read-only bind of the host's /), tmp, shm, dev, run. It stays
// mounted in restore slots (criu binds its pieces into each copy); `run` unmounts it after
// pivot_root, leaving only the binds.
static void buildStaging(const struct Options *options, char *root, size_t size) {
    if (!options->staging) fail("--staging", "missing");
    char text[64], path[4096];
    snprintf(text, sizeof text, "size=%llu,mode=0755", options->tmpSize);
    mountOrFail("aether-sandbox", options->staging, "tmpfs", MS_NOSUID, text);
    snprintf(root, size, "%s/root", options->staging);
    makeFolder(root, 0755);
    snprintf(path, sizeof path, "%s/tmp", options->staging);
    makeFolder(path, 01777);
    snprintf(path, sizeof path, "%s/shm", options->staging);
    makeFolder(path, 01777);
    snprintf(path, sizeof path, "%s/run", options->staging);
    makeFolder(path, 0755);
    if (options->secrets) {
        snprintf(path, sizeof path, "%s/run/secrets", options->staging);
        makeFolder(path, 0755);
    }
    snprintf(path, sizeof path, "%s/dev", options->staging);
    makeFolder(path, 0755);
    makeNode(path, "null", 1, 3);
    makeNode(path, "zero", 1, 5);
    makeNode(path, "full", 1, 7);
    makeNode(path, "random", 1, 8);
    makeNode(path, "urandom", 1, 9);
    char link[4096];
    static const char *links[][2] = {
        {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
        {"/proc/self/fd/2", "stderr"}};
    for (size_t index = 0; index < sizeof links / sizeof *links; index++) {
        snprintf(link, sizeof link, "%s/%s", path, links[index][1]);
        if (symlink(links[index][0], link) != 0) failPath("cannot symlink", link);
    }
    snprintf(link, sizeof link, "%s/shm", path);
    makeFolder(link, 0755);
    for (int index = 0; index < options->coverCount; index++) {
        snprintf(path, sizeof path, "%s/cover-%d", options->staging, index);
        makeFolder(path, 0755);
    }
    // Mount points for binds below /tmp, /run, /dev/shm or a cover.
    for (int index = 0; index < options->bindCount; index++) {
        const char *bind = options->binds[index];
        const char *prefix = coveredPrefix(options, bind, path, sizeof path);
        if (!prefix) continue;
        makeMountPoint(path, bind + strlen(prefix), isFolder(options->bindSources[index]));
    }
    // The host's root file system alone (not its submounts: no /proc, /sys, /dev, /run or
    // /dev/shm of the host), read-only.
    bindReadOnly("/", root, 0);
}

// Binds every piece into the root, in an order where each mount point exists when it is used.
static void assembleView(const struct Options *options, const char *root) {
    char source[4096], target[4096];
    snprintf(target, sizeof target, "%s/proc", root);
    mountOrFail("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    snprintf(source, sizeof source, "%s/dev", options->staging);
    snprintf(target, sizeof target, "%s/dev", root);
    // Not nodev: its device nodes are what it is for.
    mountOrFail(source, target, NULL, MS_BIND, NULL);
    mountOrFail(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC, NULL);
    snprintf(source, sizeof source, "%s/shm", options->staging);
    snprintf(target, sizeof target, "%s/dev/shm", root);
    mountOrFail(source, target, NULL, MS_BIND, NULL);
    mountOrFail(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    snprintf(source, sizeof source, "%s/tmp", options->staging);
    snprintf(target, sizeof target, "%s/tmp", root);
    mountOrFail(source, target, NULL, MS_BIND, NULL);
    mountOrFail(NULL, target, NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, NULL);
    snprintf(source, sizeof source, "%s/run", options->staging);
    snprintf(target, sizeof target, "%s/run", root);
    bindReadOnly(source, target, MS_NOEXEC);
    if (options->secrets) {
        snprintf(target, sizeof target, "%s/run/secrets", root);
        bindReadOnly(options->secrets, target, MS_NOEXEC);
    }
    // Covers before the binds below them (the orchestrator never nests covers).
    for (int index = 0; index < options->coverCount; index++) {
        snprintf(source, sizeof source, "%s/cover-%d", options->staging, index);
        snprintf(target, sizeof target, "%s%s", root, options->covers[index]);
        bindReadOnly(source, target, MS_NOEXEC);
    }
    for (int index = 0; index < options->bindCount; index++) {
        snprintf(target, sizeof target, "%s%s", root, options->binds[index]);
        bindReadOnly(options->bindSources[index], target, 0);
    }
}

static void enterView(const struct Options *options, const char *root) {
    if (chdir(root) != 0) failPath("cannot enter", root);
    if (syscall(SYS_pivot_root, ".", ".") != 0) fail("pivot_root", NULL);
    // The old root (with the staging tmpfs) is stacked under the new one: detach it.
    if (umount2(".", MNT_DETACH) != 0) fail("umount the old root", NULL);
    if (chdir(options->cwd) != 0 && chdir("/") != 0) fail("chdir /", NULL);
}

// MARK: network: none

static void loopbackUp(void) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail("socket", NULL);
    struct ifreq request;
    memset(&request, 0, sizeof request);
    strcpy(request.ifr_name, "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &request) != 0) fail("SIOCGIFFLAGS lo", NULL);
    request.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(fd, SIOCSIFFLAGS, &request) != 0) fail("SIOCSIFFLAGS lo", NULL);
    close(fd);
}

// MARK: identity

// A fork template's user namespace (--fork-template): made here, its uid and gid maps written
// by a helper still in the host's user namespace (a process may not map ids other than its own
// into a namespace it has entered). We are PID 1 of the instance's PID namespace, whose /proc
// the view mounted: the helper finds us at /proc/1.
static void enterUserNamespace(const struct Options *options) {
    int ready[2], done[2];
    if (pipe(ready) != 0 || pipe(done) != 0) fail("pipe", NULL);
    pid_t helper = fork();
    if (helper < 0) fail("fork", NULL);
    if (helper == 0) {
        char byte;
        if (read(ready[0], &byte, 1) != 1) _exit(FAILED);
        char map[64];
        const char *files[] = {"/proc/1/uid_map", "/proc/1/gid_map"};
        long ids[] = {options->uid, options->gid};
        for (int index = 0; index < 2; index++) {
            int fd = open(files[index], O_WRONLY | O_CLOEXEC);
            int length = snprintf(map, sizeof map, "%ld %ld 1\n", ids[index], ids[index]);
            if (fd < 0 || write(fd, map, (size_t)length) != length) _exit(FAILED);
            close(fd);
        }
        _exit(write(done[1], "x", 1) == 1 ? 0 : FAILED);
    }
    if (unshare(CLONE_NEWUSER) != 0) fail("unshare(CLONE_NEWUSER)", NULL);
    char byte = 'x';
    if (write(ready[1], &byte, 1) != 1 || read(done[0], &byte, 1) != 1) fail("user namespace", "its id maps were not written");
    int status = 0;
    waitpid(helper, &status, 0);
    close(ready[0]);
    close(ready[1]);
    close(done[0]);
    close(done[1]);
}

static void dropPrivileges(const struct Options *options) {
    if (options->uid <= 0 || options->gid <= 0) fail("--uid/--gid", "an unprivileged uid and gid are required");
    if (options->forkTemplate) enterUserNamespace(options);
    // No capability comes back through exec (file capabilities, setuid binaries): the bounding
    // set empty, no ambient ones, no_new_privs. A fork template keeps CAP_SYS_ADMIN (in its own
    // user namespace only) for unshare(CLONE_NEWPID).
    for (int capability = 0; capability <= 63; capability++) {
        if (options->forkTemplate && capability == CAP_SYS_ADMIN) continue;
        if (prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 && errno != EINVAL) fail("PR_CAPBSET_DROP", NULL);
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) fail("PR_CAP_AMBIENT_CLEAR_ALL", NULL);
    if (setgroups(0, NULL) != 0) fail("setgroups", NULL);
    if (setresgid((gid_t)options->gid, (gid_t)options->gid, (gid_t)options->gid) != 0) fail("setresgid", NULL);
    if (options->forkTemplate && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) fail("PR_SET_KEEPCAPS", NULL);
    // From uid 0 to a uid with no 0 left, the kernel clears the permitted and effective sets.
    if (setresuid((uid_t)options->uid, (uid_t)options->uid, (uid_t)options->uid) != 0) fail("setresuid", NULL);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("PR_SET_NO_NEW_PRIVS", NULL);
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (options->forkTemplate) {
        // CAP_SYS_ADMIN alone, kept through exec as an ambient capability.
        memset(data, 0, sizeof data);
        data[0].effective = data[0].permitted = data[0].inheritable = 1u << CAP_SYS_ADMIN;
        if (syscall(SYS_capset, &header, data) != 0) fail("capset", NULL);
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0) != 0) fail("PR_CAP_AMBIENT_RAISE", NULL);
        return;
    }
    if (syscall(SYS_capget, &header, data) != 0) fail("capget", NULL);
    for (int index = 0; index < 2; index++) {
        if (data[index].permitted || data[index].effective || data[index].inheritable) {
            memset(data, 0, sizeof data);
            if (syscall(SYS_capset, &header, data) != 0) fail("capset", NULL);
            break;
        }
    }
}

// MARK: the syscall filter

#if defined(__x86_64__)
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define AUDIT_ARCH_NATIVE AUDIT_ARCH_AARCH64
#else
#error "aether-sandbox: add this architecture's AUDIT_ARCH"
#endif

// What no function needs, and what would let it reach past its confinement: refused with EPERM.
// The list is CAetherSystem's (system.c, aether_refused_call_*), which the orchestrator counts
// refusals by.

// Namespace flags clone(2) may not ask for.
static const unsigned long refusedCloneFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                              CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP;

static void installFilter(const struct Options *options) {
    enum { CAPACITY = 256 };
    int count = aether_refused_call_count();
    if (2 * count + 30 > CAPACITY) fail("seccomp", "too many refused calls for the filter");
    struct sock_filter program[CAPACITY];
    int length = 0;
#define ADD(statement) program[length++] = (struct sock_filter)statement
    ADD(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    ADD(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_NATIVE, 1, 0));
    ADD(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
    ADD(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
    if (options->forkTemplate) {
        // unshare(CLONE_NEWPID) and nothing else (before the refused calls, which list unshare).
        ADD(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_unshare, 0, 4));
        ADD(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])));
        ADD(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, CLONE_NEWPID, 0, 1));
        ADD(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
        ADD(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
    }
#if defined(__x86_64__)
    // x32 numbers reach the same kernel entry points under other numbers.
    ADD(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1));
    ADD(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
#endif
    for (int index = 0; index < count; index++) {
        ADD(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned int)aether_refused_call_number(index), 0, 1));
        ADD(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
    }
    // clone3 passes its flags in memory the filter cannot read: ENOSYS makes libc use clone.
    ADD(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1));
    ADD(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS));
    ADD(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 1, 0));
    ADD(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    ADD(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])));
    ADD(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, (unsigned int)refusedCloneFlags, 0, 1));
    ADD(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
    ADD(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
#undef ADD
    struct sock_fprog filter = {.len = (unsigned short)length, .filter = program};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &filter) != 0) fail("seccomp", NULL);
}

// MARK: exec and init

static void resetSignals(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    for (int signal = 1; signal < NSIG; signal++) sigaction(signal, &action, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void execProgram(const struct Options *options) {
    if (options->searchPath) execvp(options->program[0], options->program);
    else execv(options->program[0], options->program);
    failPath("cannot execute", options->program[0]);
}

static volatile pid_t child;

static void forward(int signal) {
    if (child > 0) kill(child, signal);
}

// PID 1 of the instance's namespace for handlers that expect an ordinary parent (a process
// handler's SIGTERM must reach it; as PID 1 it would be ignored): forwards signals to the
// handler, reaps everything, and exits as the handler did (a signal S as status 128+S: PID 1
// cannot die of a signal it sends itself).
static void runAsInit(const struct Options *options) {
    sigset_t all, previous;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &previous);
    child = fork();
    if (child < 0) fail("fork", NULL);
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &previous, NULL);
        execProgram(options);
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = forward;
    sigfillset(&action.sa_mask);
    int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
    for (size_t index = 0; index < sizeof forwarded / sizeof *forwarded; index++)
        sigaction(forwarded[index], &action, NULL);
    sigprocmask(SIG_SETMASK, &previous, NULL);
    for (;;) {
        int status = 0;
        pid_t reaped = wait(&status);
        if (reaped < 0) {
            if (errno == EINTR) continue;
            _exit(FAILED);
        }
        if (reaped != child) continue;
        _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
}

// Standard input from the view's own /dev/null: criu cannot dump a descriptor opened in another
// mount namespace.
static void standardInput(void) {
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0) fail("open /dev/null", NULL);
    if (fd != 0) {
        if (dup2(fd, 0) != 0) fail("dup2 /dev/null", NULL);
        close(fd);
    }
}

static int run(struct Options *options) {
    if (getpid() != 1) fail("run", "not PID 1 of a new PID namespace");
    joinCgroups(options);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail("make / private", NULL);
    char root[4096];
    buildStaging(options, root, sizeof root);
    assembleView(options, root);
    enterView(options, root);
    standardInput();
    if (options->networkNone) loopbackUp();
    dropPrivileges(options);
    installFilter(options);
    if (options->init) runAsInit(options);
    execProgram(options);
    return FAILED;
}

static int restoreSlot(struct Options *options) {
    joinCgroups(options);
    if (unshare(CLONE_NEWNS) != 0) fail("unshare(CLONE_NEWNS)", NULL);
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail("make / private", NULL);
    char root[4096];
    buildStaging(options, root, sizeof root);
    execProgram(options);
    return FAILED;
}

static int realUID(int argc, char **argv) {
    if (argc < 6 || strcmp(argv[4], "--") != 0) fail("usage", "real-uid UID GID -- PROGRAM ARG...");
    gid_t gid = (gid_t)number(argv[3], "GID");
    uid_t uid = (uid_t)number(argv[2], "UID");
    if (setresgid(gid, (gid_t)-1, (gid_t)-1) != 0) fail("setresgid", NULL);
    if (setresuid(uid, (uid_t)-1, (uid_t)-1) != 0) fail("setresuid", NULL);
    execv(argv[5], &argv[5]);
    failPath("cannot execute", argv[5]);
    return FAILED;
}

int main(int argc, char **argv) {
    resetSignals();
    if (argc < 2) fail("usage", "aether-sandbox run|restore-slot|real-uid ...");
    struct Options options;
    if (strcmp(argv[1], "run") == 0) {
        parse(argc, argv, 2, &options);
        return run(&options);
    }
    if (strcmp(argv[1], "restore-slot") == 0) {
        parse(argc, argv, 2, &options);
        return restoreSlot(&options);
    }
    if (strcmp(argv[1], "real-uid") == 0) return realUID(argc, argv);
    fail(argv[1], "unknown mode");
    return FAILED;
}
