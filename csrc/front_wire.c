/* The front-end's records: NUL-terminated fields, descriptors in SCM_RIGHTS
 * (emergence/node/worker.py documents the protocol). */
#include "front.h"


int put(struct msg *m, const char *s)
{
	size_t l = strlen(s) + 1;
	if (m->len + l > sizeof m->buf)
		return -1;
	memcpy(m->buf + m->len, s, l);
	m->len += l;
	return 0;
}

int putnum(struct msg *m, long v)
{
	char tmp[32];
	snprintf(tmp, sizeof tmp, "%ld", v);
	return put(m, tmp);
}

int send_msg(int sock, struct msg *m)
{
	struct iovec iov = { .iov_base = m->buf, .iov_len = m->len };
	union {
		char b[CMSG_SPACE(sizeof(int) * MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct msghdr h = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (m->nfds) {
		h.msg_control = ctl.b;
		h.msg_controllen = CMSG_SPACE(sizeof(int) * m->nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&h);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * m->nfds);
		memcpy(CMSG_DATA(c), m->fds, sizeof(int) * m->nfds);
	}
	ssize_t n;
	do
		n = sendmsg(sock, &h, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)m->len ? 0 : -1;
}

/* Returns the record's length; 0 at EOF; -1 on error.  Fields are split into F. */
ssize_t recv_msg(int sock, struct msg *m, char **f, int maxf, int *nf)
{
	struct iovec iov = { .iov_base = m->buf, .iov_len = sizeof m->buf - 1 };
	union {
		char b[CMSG_SPACE(sizeof(int) * MAX_FDS)];
		struct cmsghdr align;
	} ctl;
	struct msghdr h = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.b,
			    .msg_controllen = sizeof ctl.b };
	ssize_t n;
	do
		n = recvmsg(sock, &h, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	m->nfds = 0;
	if (n <= 0)
		return n;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			memcpy(m->fds + m->nfds, CMSG_DATA(c), sizeof(int) * k);
			m->nfds += k;
		}
	m->buf[n] = 0;
	*nf = 0;
	for (char *p = m->buf; p < m->buf + n && *nf < maxf; p += strlen(p) + 1)
		f[(*nf)++] = p;
	return n;
}

/* The descriptors a cold start would pass on: every one without FD_CLOEXEC. */
int inherited_fds(struct msg *m, char *nums, size_t size)
{
	DIR *d = opendir("/proc/self/fd");
	size_t used = 0;
	nums[0] = 0;
	if (!d)
		return -1;
	int dfd = dirfd(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		int fd = atoi(e->d_name);
		if (fd == dfd)
			continue;
		int fl = fcntl(fd, F_GETFD);
		if (fl < 0 || (fl & FD_CLOEXEC))
			continue;
		if (m->nfds == MAX_FDS) {
			closedir(d);
			return -1;
		}
		m->fds[m->nfds++] = fd;
		used += snprintf(nums + used, size - used, used ? ",%d" : "%d", fd);
		if (used >= size) {
			closedir(d);
			return -1;
		}
	}
	closedir(d);
	return 0;
}
