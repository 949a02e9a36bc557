/* A planner started on demand for a state root (front.c: when none answers). */
#include "front.h"

/* A planner started on demand lives in ROOT/.planner/BUILD (a container id
 * never starts with a dot; one directory per build, so an upgrade, or two
 * installs sharing a root, never find each other's planner): its socket, its
 * lock (held by the planner for its whole life, so two calls never start
 * two), its pid and its log. */
#define DEMAND_TOP ".planner"
#define DEMAND_DIR DEMAND_TOP "/" BUILD_ID
#define DEMAND_RETRY 5 /* s: a planner that failed to start is not retried sooner */

int demand_path(char *out, size_t size, const char *root, const char *name)
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
void start_planner(const char *root)
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
	struct stat named;
	if (lstat(lock, &named) < 0 || named.st_ino != st.st_ino || named.st_dev != st.st_dev) {
		close(fd); /* swept between our open and flock (planner.py's sweep_builds) */
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
		 * Only under init does it stay.  Under a subreaper it takes the
		 * lock's time back: the engine's next call from outside one (podman
		 * runs `create` from conmon, `start` and `delete` itself) may start
		 * the planner at once, not DEMAND_RETRY seconds later, by which time
		 * the next conmon had stamped it again (so podman never got one). */
		for (int i = 0; i < 2000 && getppid() == mid; i++)
			usleep(500);
		if (getppid() != 1) {
			struct timespec never[2] = { { 0, 0 }, { 0, 0 } };
			futimens(fd, never);
			_exit(0);
		}
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
