/* What only the engine's own process can do for the worker: spawn the shim
 * (SPAWN), reap (WAIT), and end what it spawned when the worker dies. */
#include "front.h"

/* SPAWN targets argc argv... with fds [exe, one per target]: fork, place the
 * descriptors at their numbers, execute the memfd.  Replies PID or ERR. */
void do_spawn(int sock, struct msg *m, char **f, int nf)
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

void kill_children(void);

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

int do_wait(int sock, char **f, int nf)
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

/* The first SIZE - 1 bytes of the file at PATH, NUL-terminated; <= 0 if
 * it cannot be read or is empty. */
ssize_t read_small(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n >= 0)
		buf[n] = 0;
	return n;
}

/* The worker died mid-call: what we spawned for it (shim, container init,
 * exec'd process) has nobody to finish it, so it goes too, as it would with
 * the cold path's process.  `delete` removes the state left. */
void kill_children(void)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
	if (read_small(path, buf, sizeof buf) <= 0)
		return;
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
