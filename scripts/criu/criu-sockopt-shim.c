/*
 * criu-sockopt-shim.c -- LD_PRELOAD shim for criu 4.1.1 on Linux >= 6.16.
 *
 * Since Linux 6.16, getsockopt(SOL_SOCKET, SO_PASSCRED / SO_PASSSEC) on a
 * socket that is not AF_UNIX/AF_NETLINK fails with EOPNOTSUPP. criu 4.1.1
 * treats that as fatal while dumping *any* inet socket:
 *     Error (criu/sockets.c:...): Can't get 1:16 opt: Operation not supported
 * (fixed upstream in criu 4.2). Such a socket cannot have the option set, so
 * "0 / off" is the truthful answer. This shim turns exactly that error, and
 * nothing else, into success with value 0.
 *
 * It is loaded into criu only (never into the restored tasks: criu's restorer
 * replaces criu's whole address space), through the private loader:
 *     ld-linux-x86-64.so.2 --preload criu-sockopt-shim.so --library-path ... criu ...
 * Built with the system gcc (bookworm, glibc 2.36) but run under trixie's
 * glibc 2.41, so it only uses long-standing symbols (dlsym, __errno_location,
 * syscall); scripts/install-criu.sh checks this and self-tests the shim.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_PASSCRED
#define SO_PASSCRED 16
#endif
#ifndef SO_PASSSEC
#define SO_PASSSEC 34
#endif

typedef int (*getsockopt_fn)(int, int, int, void *, socklen_t *);

static getsockopt_fn real_getsockopt;

__attribute__((constructor)) static void shim_init(void)
{
	real_getsockopt = (getsockopt_fn)dlsym(RTLD_NEXT, "getsockopt");
}

int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
{
	getsockopt_fn fn = __atomic_load_n(&real_getsockopt, __ATOMIC_RELAXED);
	int ret;

	if (fn == NULL) {
		fn = (getsockopt_fn)dlsym(RTLD_NEXT, "getsockopt");
		if (fn != NULL)
			__atomic_store_n(&real_getsockopt, fn, __ATOMIC_RELAXED);
	}
	if (fn != NULL)
		ret = fn(fd, level, optname, optval, optlen);
	else
		ret = (int)syscall(SYS_getsockopt, fd, level, optname, optval, optlen);

	if (ret < 0 && errno == EOPNOTSUPP && level == SOL_SOCKET &&
	    (optname == SO_PASSCRED || optname == SO_PASSSEC) &&
	    optval != NULL && optlen != NULL && *optlen >= (socklen_t)sizeof(int)) {
		*(int *)optval = 0;
		*optlen = (socklen_t)sizeof(int);
		return 0; /* errno is unspecified on success; leave it as is */
	}
	return ret;
}
