/* emergence: the front-end that engines run.
 *
 * It decides nothing.  It asks the warm planner of `emergence node` (a unix
 * socket, root-only) to run this call, handing over its argv, environment,
 * working directory and open descriptors; then it does what only the
 * process the engine ran can do, because it must be the parent of the
 * container: spawn the shim (SPAWN) and reap children (WAIT).  It forwards
 * the signals it gets to the worker, and exits with the worker's code (EXIT).
 *
 * When no planner answers, or one of another build, it executes the Python
 * command (emergence-py beside it): the cold path, the same code.  Installed
 * as emergence-cni it does the same for Relay's CNI plugin (emergence-cni-py).
 *
 * Which planner: EMERGENCE_PLANNER_SOCKET's ("off", or --no-planner: none);
 * else the node's (or systemd's) at DEFAULT_SOCKET; else the state root's own,
 * ROOT/.planner/BUILD/planner.sock, which the first hot verb (as root, under a
 * state root of root's alone, not below a subreaper such as conmon; for the
 * CNI plugin, an ADD, DEL or CHECK under the default root) starts when
 * none answers: it takes ROOT/.planner/BUILD/lock
 * (the planner holds it for its whole life, so calls at once start one, and a
 * planner killed with SIGKILL frees it), execs emergence-planner in the
 * background with that lock and a clean environment, and runs its own call
 * cold.  The planner exits after EMERGENCE_PLANNER_IDLE seconds (60) without
 * a call.  A planner that fails to start is not tried again for DEMAND_RETRY
 * seconds; either way the cost is the cold path, never a wait.
 *
 * It is the trust anchor of the warm path, so it checks before it sends
 * anything: the socket and its directory belong to root (or to the caller)
 * and are writable by nobody else, and the process serving it is root (or
 * the caller), by SO_PEERCRED.  And it waits for an answer only so long
 * (EMERGENCE_PLANNER_TIMEOUT seconds, default 2): a call the planner has not
 * acknowledged by then runs cold.  The worker runs nothing before our GO,
 * which also carries the caller's descriptors: a call we gave up on is never
 * run twice, and a stopped planner holds none of our pipes open.
 *
 * Messages are SOCK_SEQPACKET records of NUL-terminated fields, with
 * descriptors in SCM_RIGHTS; emergence/node/planner.py is the other side and
 * documents the protocol.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BUILD_ID
#define BUILD_ID "dev"
#endif
#define DEFAULT_SOCKET "/run/emergence/node/planner.sock"
#define DEFAULT_ROOT "/run/emergence"
#define MAX_MSG (256 * 1024)
#define MAX_FDS 250
#define DEFAULT_TIMEOUT 2.0

extern char **environ;
static char **g_argv;
static volatile pid_t worker = 0;

/* Which program we are: `emergence`, or `emergence-cni` (the same front-end,
 * installed under the CNI plugin's name); its cold path is NAME-py. */
static const char *program(void)
{
	const char *base = strrchr(g_argv[0], '/');
	base = base ? base + 1 : g_argv[0];
	return strcmp(base, "emergence-cni") == 0 ? "emergence-cni" : "emergence";
}

static void cold(void) __attribute__((noreturn));
static void cold(void)
{
	char self[PATH_MAX], path[PATH_MAX + 16];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			snprintf(path, sizeof path, "%s/%s-py", self, program());
			execv(path, g_argv);
		}
	}
	snprintf(path, sizeof path, "%s-py", program());
	execvp(path, g_argv);
	fprintf(stderr, "emergence: cannot run emergence-py (%s): reinstall emergence\n",
		strerror(errno));
	exit(1);
}

static volatile sig_atomic_t forwarded_last = 0;

static void forward(int sig)
{
	if (worker > 0 && kill(worker, sig) == 0 && sig != SIGWINCH && sig != SIGCONT)
		forwarded_last = sig;
}

/* A record: fields appended NUL-terminated. */
struct msg {
	char buf[MAX_MSG];
	size_t len;
	int fds[MAX_FDS];
	int nfds;
};

static int put(struct msg *m, const char *s)
{
	size_t l = strlen(s) + 1;
	if (m->len + l > sizeof m->buf)
		return -1;
	memcpy(m->buf + m->len, s, l);
	m->len += l;
	return 0;
}

static int putnum(struct msg *m, long v)
{
	char tmp[32];
	snprintf(tmp, sizeof tmp, "%ld", v);
	return put(m, tmp);
}

static int send_msg(int sock, struct msg *m)
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
static ssize_t recv_msg(int sock, struct msg *m, char **f, int maxf, int *nf)
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
static int inherited_fds(struct msg *m, char *nums, size_t size)
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

/* SPAWN targets argc argv... with fds [exe, one per target]: fork, place the
 * descriptors at their numbers, execute the memfd.  Replies PID or ERR. */
static void do_spawn(int sock, struct msg *m, char **f, int nf)
{
	struct msg out = { .len = 0 };
	int err = EINVAL;
	int ntargets = 0, targets[MAX_FDS];
	if (nf < 3)
		goto fail;
	for (char *p = f[1]; *p && ntargets < MAX_FDS;) {
		targets[ntargets++] = (int)strtol(p, &p, 10);
		if (*p == ',')
			p++;
	}
	char *argv[64];
	int argc = atoi(f[2]);
	if (argc < 1 || argc > nf - 3 || argc >= 64 || m->nfds != ntargets + 1)
		goto fail;
	for (int i = 0; i < argc; i++)
		argv[i] = f[3 + i];
	argv[argc] = NULL;
	pid_t pid = fork();
	if (pid < 0) {
		err = errno;
		goto fail;
	}
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		for (int s = 1; s < NSIG; s++)
			signal(s, SIG_DFL);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* Move everything above every target first, then into place. */
		int hi = 0;
		for (int i = 0; i < ntargets; i++)
			hi = targets[i] > hi ? targets[i] : hi;
		for (int i = 0; i < m->nfds; i++)
			if ((m->fds[i] = fcntl(m->fds[i], F_DUPFD_CLOEXEC, hi + 1)) < 0)
				_exit(127);
		for (int i = 0; i < ntargets; i++)
			if (dup2(m->fds[i + 1], targets[i]) < 0)
				_exit(127);
		char *envp[] = { NULL };
		syscall(SYS_execveat, m->fds[0], "", argv, envp, AT_EMPTY_PATH);
		_exit(127);
	}
	for (int i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	put(&out, "PID");
	putnum(&out, pid);
	send_msg(sock, &out);
	return;
fail:
	for (int i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	put(&out, "ERR");
	putnum(&out, err);
	send_msg(sock, &out);
}

static void kill_children(void);

/* A blocking wait also watches the connection: if the worker dies while we
 * wait for its container, we must not wait forever for a process nobody
 * will finish. */
static int wait_or_hangup(int sock, pid_t pid, int *status, int options)
{
	if (!(options & WNOHANG) && pid > 0) {
		int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
		if (pfd >= 0) {
			struct pollfd p[2] = { { .fd = pfd, .events = POLLIN },
					       { .fd = sock, .events = POLLIN } };
			for (;;) {
				int n = poll(p, 2, -1);
				if (n < 0 && errno == EINTR)
					continue;
				if (n > 0 && p[1].revents) {
					close(pfd);
					return -2;
				}
				if (n > 0 && p[0].revents)
					break;
			}
			close(pfd);
		}
	}
	pid_t r;
	do
		r = waitpid(pid, status, options | __WALL);
	while (r < 0 && errno == EINTR);
	return r;
}

static int do_wait(int sock, char **f, int nf)
{
	struct msg out = { .len = 0 };
	int status = 0;
	pid_t r = -1;
	errno = EINVAL;
	if (nf >= 3)
		r = wait_or_hangup(sock, atoi(f[1]), &status, atoi(f[2]));
	if (r == -2)
		return -1;
	if (r < 0) {
		put(&out, "ERR");
		putnum(&out, errno);
	} else {
		put(&out, "STATUS");
		putnum(&out, r);
		putnum(&out, status);
	}
	send_msg(sock, &out);
	return 0;
}

/* The worker died mid-call: what we spawned for it (shim, container init,
 * exec'd process) has nobody to finish it, so it goes too, as it would with
 * the cold path's process.  `delete` removes the state left. */
static void kill_children(void)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = 0;
	for (char *p = buf; *p;) {
		long pid = strtol(p, &p, 10);
		if (pid > 0)
			kill((pid_t)pid, SIGKILL);
		while (*p == ' ')
			p++;
	}
	while (waitpid(-1, NULL, __WALL) > 0 || errno == EINTR)
		;
}

/* Say why the planner at hand is not used (one line), and return -1. */
static int refuse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int refuse(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("emergence: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs("; running without the node\n", stderr);
	va_end(ap);
	return -1;
}

/* A file the planner's trust rests on (ST, from lstat: a symlink is not
 * followed): owned by root or the caller, writable by nobody else, of TYPE. */
static int trusted_file(const char *what, const char *path, const struct stat *st, mode_t type,
			uid_t me)
{
	if ((st->st_mode & S_IFMT) != type)
		return refuse("%s %s is %s", what, path, S_ISLNK(st->st_mode) ? "a symlink" :
			      type == S_IFDIR ? "not a directory" : "not a socket");
	if (st->st_uid != 0 && st->st_uid != me)
		return refuse("%s %s is owned by uid %u, not root", what, path,
			      (unsigned)st->st_uid);
	if (st->st_mode & (S_IWGRP | S_IWOTH))
		return refuse("%s %s is writable by group or others (mode %04o)", what, path,
			      (unsigned)(st->st_mode & 07777));
	return 0;
}

/* EMERGENCE_PLANNER_TIMEOUT: seconds to wait for the planner to take a call. */
static double timeout_seconds(void)
{
	const char *s = getenv("EMERGENCE_PLANNER_TIMEOUT");
	char *end;
	double v = s && *s ? strtod(s, &end) : 0;
	return v > 0 && v <= 3600 && *end == 0 ? v : DEFAULT_TIMEOUT;
}

static void too_slow(const char *path, double timeout) __attribute__((noreturn));
static void too_slow(const char *path, double timeout)
{
	fprintf(stderr, "emergence: the node's planner at %s did not answer within %g s; "
		"running without the node\n", path, timeout);
	cold();
}

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void set_send_timeout(int sock, double seconds)
{
	struct timeval tv = { .tv_sec = (time_t)seconds,
			      .tv_usec = (suseconds_t)((seconds - (time_t)seconds) * 1e6) };
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* The call as the front-end needs to know it: the verb, the state root
 * (--root), and the opt-out (--no-planner), from the global options (runc's:
 * before the verb).  Only options that take a value need naming here. */
struct call {
	const char *verb, *root;
	int no_planner;
};

static void scan(char **argv, struct call *c)
{
	static const char *const valued[] = { "root", "store", "log", "log-format", "rootless",
					      "criu", NULL };
	for (int i = 1; argv[i]; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			c->verb = argv[i + 1];
			return;
		}
		if (a[0] != '-' || a[1] == 0) {
			c->verb = a;
			return;
		}
		while (*a == '-')
			a++;
		size_t n = strcspn(a, "=");
		const char *value = a[n] == '=' ? a + n + 1 : NULL;
		if (n == 10 && strncmp(a, "no-planner", n) == 0)
			c->no_planner = !value || (strcmp(value, "false") && strcmp(value, "0"));
		for (int k = 0; valued[k]; k++)
			if (strlen(valued[k]) == n && strncmp(a, valued[k], n) == 0) {
				if (!value && !(value = argv[++i]))
					return;
				if (k == 0)
					c->root = value;
			}
	}
}

/* The verbs worth a planner started on demand: the runtime's hot ones.  Any
 * other verb uses a planner that is up, and never starts one. */
static int hot(const char *verb)
{
	static const char *const verbs[] = { "run", "create", "start", "exec", "kill", "delete",
					     "state", NULL };
	for (int k = 0; verb && verbs[k]; k++)
		if (strcmp(verb, verbs[k]) == 0)
			return 1;
	return 0;
}

/* The CNI plugin's calls worth a planner started on demand: those that
 * change or check an attachment (podman's CNI backend calls the plugin with
 * no node up; a cold Python start is most of such a call). */
static int hot_cni(void)
{
	const char *cmd = getenv("CNI_COMMAND");
	return cmd && (strcmp(cmd, "ADD") == 0 || strcmp(cmd, "DEL") == 0 ||
		       strcmp(cmd, "CHECK") == 0);
}

static double timeout, started;

/* A connection to the planner at PATH, checked: -1 when none is there (no
 * socket, or one nobody serves: a planner that died); a socket we may not
 * trust, or one that does not answer in time, is the cold path. */
static int planner_at(const char *path)
{
	uid_t me = geteuid();
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	if (strlen(path) >= sizeof dir)
		cold();
	if (!slash)
		strcpy(dir, ".");
	else if (slash == path)
		strcpy(dir, "/");
	else
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
	/* No socket we may see (no node, or not ours to use, as from a user
	 * namespace): silently none.  Then the directory, then the socket. */
	struct stat dst, sst;
	if (lstat(path, &sst) < 0 || lstat(dir, &dst) < 0)
		return -1;
	if (trusted_file("the planner socket's directory", dir, &dst, S_IFDIR, me) < 0 ||
	    trusted_file("the planner socket", path, &sst, S_IFSOCK, me) < 0)
		cold();
	started = now();
	int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (sock < 0 || strlen(path) >= sizeof addr.sun_path)
		cold();
	strcpy(addr.sun_path, path);
	set_send_timeout(sock, timeout); /* a full backlog blocks connect: bounded too */
	if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0) {
		if (errno == EAGAIN || errno == EINPROGRESS)
			too_slow(path, timeout);
		if (errno == ECONNREFUSED || errno == ENOENT) {
			close(sock);
			return -1;
		}
		cold();
	}
	struct ucred peer;
	socklen_t peer_len = sizeof peer;
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &peer, &peer_len) < 0)
		cold();
	if (peer.uid != 0 && peer.uid != me) {
		refuse("the planner at %s is served by uid %u, not root", path, (unsigned)peer.uid);
		cold();
	}
	return sock;
}

/* A planner started on demand lives in ROOT/.planner/BUILD (a container id
 * never starts with a dot; one directory per build, so an upgrade, or two
 * installs sharing a root, never find each other's planner): its socket, its
 * lock (held by the planner for its whole life, so two calls never start
 * two), its pid and its log. */
#define DEMAND_TOP ".planner"
#define DEMAND_DIR DEMAND_TOP "/" BUILD_ID
#define DEMAND_RETRY 5 /* s: a planner that failed to start is not retried sooner */

static int demand_path(char *out, size_t size, const char *root, const char *name)
{
	char cwd[PATH_MAX];
	int n;
	if (root[0] == '/')
		n = snprintf(out, size, "%s/" DEMAND_DIR "%s%s", root, *name ? "/" : "", name);
	else if (getcwd(cwd, sizeof cwd))
		n = snprintf(out, size, "%s/%s/" DEMAND_DIR "%s%s", cwd, root, *name ? "/" : "",
			     name);
	else
		return -1;
	return n > 0 && (size_t)n < size ? 0 : -1;
}

/* Start a planner for ROOT in the background, unless one is starting or up
 * (its lock is held), one failed to start a moment ago, or ROOT is not a
 * state root of root's alone (then the cold path says what is wrong).  Never
 * waits for it: this call runs cold, the next ones warm.  Costs a mkdir, an
 * open, an flock and two forks. */
static void start_planner(const char *root)
{
	char dir[PATH_MAX], lock[PATH_MAX], sock[108], exe[PATH_MAX], log[PATH_MAX];
	struct stat st;
	if (demand_path(dir, sizeof dir, root, "") < 0 || demand_path(lock, sizeof lock, root,
		"lock") < 0 || demand_path(sock, sizeof sock, root, "planner.sock") < 0 ||
	    demand_path(log, sizeof log, root, "planner.log") < 0)
		return;
	/* the state root, then ROOT/.planner, then ROOT/.planner/BUILD: each a
	 * directory of root's that nobody else may enter (made so if missing,
	 * but the root: the cold path makes that) */
	char *build = strrchr(dir, '/'), *top;
	*build = 0;
	top = strrchr(dir, '/');
	*top = 0;
	int bad = lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0 ||
		  (st.st_mode & 077);
	*top = '/';
	for (int level = 0; !bad && level < 2; level++) {
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return;
		bad = lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != 0 ||
		      (st.st_mode & 077);
		*build = '/';
	}
	if (bad)
		return;
	int fresh = 1, fd = open(lock, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST) {
		fresh = 0;
		fd = open(lock, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0)
		return;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || flock(fd, LOCK_EX | LOCK_NB) < 0 ||
	    (!fresh && time(NULL) - st.st_mtime < DEMAND_RETRY)) {
		close(fd); /* one is starting or serving, or failed just now */
		return;
	}
	futimens(fd, NULL); /* the attempt's time; a planner that exits cleanly clears it */
	unlink(sock);       /* left by a planner that was killed */
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	char *slash = n > 0 ? (self[n] = 0, strrchr(self, '/')) : NULL;
	if (!slash || snprintf(exe, sizeof exe, "%.*s/emergence-planner", (int)(slash - self),
			       self) >= (int)sizeof exe) {
		close(fd);
		return;
	}
	/* EMERGENCE_PLANNER_IDLE: seconds without a call before it exits; a value
	 * that is not a number is left out (the default, 60 s), not a planner
	 * that fails to start */
	char idle[32] = "", *rest;
	const char *s = getenv("EMERGENCE_PLANNER_IDLE");
	if (s && *s && strlen(s) < sizeof idle && strtod(s, &rest) >= 0 && *rest == 0)
		strcpy(idle, s);
	pid_t pid = fork();
	if (pid == 0) {
		/* Its own session, a grandchild: it outlives this call, and the
		 * engine that ran us never waits for it. */
		setsid();
		pid_t mid = getpid();
		if (fork() != 0)
			_exit(0);
		/* Orphaned, it goes to the nearest subreaper: an engine's conmon or
		 * containerd shim would then wait for it, long after its container.
		 * Only under init does it stay (the lock's time keeps the next
		 * try DEMAND_RETRY seconds away). */
		for (int i = 0; i < 2000 && getppid() == mid; i++)
			usleep(500);
		if (getppid() != 1)
			_exit(0);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		int null = open("/dev/null", O_RDWR);
		int out = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
		if (null < 0 || dup2(null, 0) < 0 || dup2(out < 0 ? null : out, 1) < 0 ||
		    dup2(out < 0 ? null : out, 2) < 0 || dup2(fd, 3) < 0 || fcntl(3, F_SETFD, 0) < 0)
			_exit(127);
		/* none of the caller's descriptors: an engine reads its pipes to EOF */
		if (syscall(SYS_close_range, 4, ~0U, 0) < 0)
			for (int i = 4; i < 65536; i++)
				close(i);
		if (chdir("/") < 0)
			_exit(127);
		char *args[] = { "emergence-planner", "--on-demand", sock, "--lock-fd", "3",
				 "--idle", idle, NULL };
		if (!*idle)
			args[5] = NULL;
		/* not the caller's environment: the planner serves every caller */
		char *envp[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				 "LC_ALL=C.UTF-8", NULL };
		execve(exe, args, envp);
		_exit(127);
	}
	close(fd);
	if (pid > 0)
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
}

int main(int argc, char **argv)
{
	(void)argc;
	g_argv = argv;
	struct call c = { 0 };
	scan(argv, &c);
	const char *path = getenv("EMERGENCE_PLANNER_SOCKET");
	if (c.no_planner || (path && strcmp(path, "off") == 0))
		cold();
	timeout = timeout_seconds();
	int sock;
	if (path && *path) { /* a planner named: that one or none */
		if ((sock = planner_at(path)) < 0)
			cold();
	} else if ((sock = planner_at(path = DEFAULT_SOCKET)) < 0) {
		/* No node: the state root's own planner, if one is up, for any
		 * verb; started on demand by a hot verb only.  The CNI plugin
		 * has no --root: it shares the default root's planner. */
		static char own[108];
		int cni = strcmp(program(), "emergence-cni") == 0;
		const char *root = c.root && !cni ? c.root : DEFAULT_ROOT;
		if (geteuid() != 0 || demand_path(own, sizeof own, root, "planner.sock") < 0)
			cold();
		path = own;
		if ((sock = planner_at(path)) < 0) {
			if (cni && hot_cni())
				mkdir(root, 0700); /* as the runtime makes it */
			if (cni ? hot_cni() : hot(c.verb))
				start_planner(root);
			cold();
		}
	}
	double start = started;

	static struct msg m;
	static char nums[4096], cwd[PATH_MAX];
	if (!getcwd(cwd, sizeof cwd))
		cold();
	m.len = 0;
	m.nfds = 0;
	if (inherited_fds(&m, nums, sizeof nums) < 0)
		cold();
	int fds = m.nfds;
	m.nfds = 0; /* the descriptors go with GO, once the call is taken */
	int bad = put(&m, "HELLO") | put(&m, BUILD_ID) | put(&m, cwd) | put(&m, nums);
	int n = 0;
	while (argv[n])
		n++;
	bad |= putnum(&m, n);
	for (int i = 0; i < n; i++)
		bad |= put(&m, argv[i]);
	for (n = 0; environ[n];)
		n++;
	bad |= putnum(&m, n);
	for (int i = 0; i < n; i++)
		bad |= put(&m, environ[i]);
	if (bad)
		cold();
	if (send_msg(sock, &m) < 0) {
		if (errno == EAGAIN)
			too_slow(path, timeout);
		cold();
	}

	char *f[4096];
	int nf = 0;
	static struct msg in;
	struct pollfd p = { .fd = sock, .events = POLLIN };
	for (;;) {
		int left = (int)((start + timeout - now()) * 1000) + 1;
		int r = left > 0 ? poll(&p, 1, left) : 0;
		if (r > 0)
			break;
		if (r == 0)
			too_slow(path, timeout); /* unacknowledged: it never runs (no GO) */
		if (errno != EINTR)
			cold();
	}
	if (recv_msg(sock, &in, f, 4096, &nf) <= 0 || nf < 2 || strcmp(f[0], "OK") != 0)
		cold(); /* another build, or a planner that could not take the call */
	/* The worker runs the call only once it has our GO; from here on it is its. */
	m.len = 0;
	m.nfds = fds;
	put(&m, "GO");
	if (send_msg(sock, &m) < 0)
		cold();
	set_send_timeout(sock, 0);
	worker = atoi(f[1]);
	static const int forwarded[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2,
					 SIGWINCH, SIGCONT };
	struct sigaction sa = { .sa_handler = forward, .sa_flags = SA_RESTART };
	for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++)
		sigaction(forwarded[i], &sa, NULL);
	/* From here on our stdio is the worker's too; we only serve its requests. */
	for (;;) {
		ssize_t r = recv_msg(sock, &in, f, 4096, &nf);
		if (r > 0 && nf >= 1 && strcmp(f[0], "WAIT") == 0 && do_wait(sock, f, nf) == 0)
			continue;
		if (r <= 0 || nf < 1 || strcmp(f[0], "WAIT") == 0) {
			int sig = forwarded_last;
			if (sig) {
				/* It died of the signal we passed on (one it had not
				 * caught yet, say during create): so do we, as the
				 * cold path's process would have. */
				kill_children();
				signal(sig, SIG_DFL);
				sigset_t one;
				sigemptyset(&one);
				sigaddset(&one, sig);
				sigprocmask(SIG_UNBLOCK, &one, NULL);
				raise(sig);
			}
			fprintf(stderr, "emergence: the node's planner worker %d died mid-call; "
				"see `emergence node status`, or run with "
				"EMERGENCE_PLANNER_SOCKET=off\n", (int)worker);
			kill_children();
			return 1;
		}
		if (strcmp(f[0], "NO") == 0)
			cold(); /* a caller it cannot serve: nothing was run */
		if (strcmp(f[0], "EXIT") == 0)
			return nf > 1 ? atoi(f[1]) : 1;
		if (strcmp(f[0], "SPAWN") == 0)
			do_spawn(sock, &in, f, nf);
		else
			for (int i = 0; i < in.nfds; i++)
				close(in.fds[i]);
	}
}
