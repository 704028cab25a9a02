/*
 * shim-selftest.c -- used by scripts/install-criu.sh to check the shim under
 * the private (trixie) loader. Exit codes:
 *   0  getsockopt(SO_PASSCRED) and (SO_PASSSEC) on a TCP socket succeeded with value 0
 *      (either the shim is working or the kernel is older than 6.16)
 *   2  getsockopt failed with EOPNOTSUPP (kernel >= 6.16 and no working shim)
 *   1  anything else
 * It also checks that other errors pass through untouched (EBADF on fd -1).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#ifndef SO_PASSSEC
#define SO_PASSSEC 34
#endif

static int probe(int fd, int opt, const char *name)
{
	int val = 42;
	socklen_t len = sizeof(val);

	if (getsockopt(fd, SOL_SOCKET, opt, &val, &len) != 0) {
		int e = errno;
		printf("%s: error %s\n", name, strerror(e));
		return e == EOPNOTSUPP ? 2 : 1;
	}
	printf("%s: ok value=%d len=%u\n", name, val, (unsigned)len);
	return (val == 0 && len == sizeof(int)) ? 0 : 1;
}

int main(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int val, r1, r2;
	socklen_t len = sizeof(val);

	if (fd < 0) {
		perror("socket");
		return 1;
	}
	r1 = probe(fd, SO_PASSCRED, "SO_PASSCRED");
	r2 = probe(fd, SO_PASSSEC, "SO_PASSSEC");
	close(fd);
	if (getsockopt(-1, SOL_SOCKET, SO_PASSCRED, &val, &len) == 0 || errno != EBADF) {
		printf("EBADF passthrough: broken\n");
		return 1;
	}
	if (r1 == 1 || r2 == 1)
		return 1;
	return (r1 == 2 || r2 == 2) ? 2 : 0;
}
