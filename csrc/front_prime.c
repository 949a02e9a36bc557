/* Priming the kernel's cgroup migration lock for a verb that will move a
 * process into a container's cgroups (run, create, exec).
 *
 * Every write to a cgroup.procs file takes the kernel's global
 * cgroup_threadgroup_rwsem for writing, and a writer that finds it idle
 * first waits a whole RCU grace period (rcu_sync_enter): ~8-16 ms here,
 * more than a warm `create` takes altogether.  The lock stays primed for
 * about one more grace period after the last writer, so calls that come
 * close together (a benchmark's loop) never pay it, while an engine's
 * create after a pause (podman, containerd, kubelet) pays it every time,
 * whatever the runtime.  So the front-end starts that wait early, beside
 * the call: a grandchild writes itself into the cgroup it is already in (a
 * move to nowhere; the lock is taken all the same) and exits.  The kernel
 * holds cgroup_mutex while it waits, so the worker's cgroup mkdirs wait
 * too: what is won is the time from here to the shim's own move.
 * By the time the shim moves the container's process, the grace period
 * has passed or is partly over.  When: once the call is sent to a planner
 * (the worker reads it meanwhile), or before the cold path's exec.
 *
 * A grandchild, so that nobody waits for it: the front-end reaps the child
 * at once, and the orphan goes to init or the engine's subreaper (which
 * reap whatever comes to them).  It holds none of the caller's descriptors
 * (an engine reads the runtime's pipes to EOF).  It needs root; it is
 * skipped otherwise, and any failure costs only the priming. */
#include "front.h"

/* Write "0" (this process) to PATH, a cgroup.procs file; whether the move
 * succeeds is no matter (the lock was taken): 0 once it opened. */
static int write_self(const char *path)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, "0", 1);
	(void)w;
	close(fd);
	return 0;
}

/* Write "0" to MOUNT + CGROUP + "/cgroup.procs": 0 once it opened. */
static int write_self_at(const char *mount, const char *cgroup)
{
	char path[PATH_MAX];
	int n = snprintf(path, sizeof path, "%s%s/cgroup.procs", mount, cgroup);
	return n > 0 && n < (int)sizeof path ? write_self(path) : -1;
}

/* Into the cgroup it is in: in the unified hierarchy if there is one, else
 * in the first v1 hierarchy that opens.  /proc/self/cgroup's lines are
 * "ID:CONTROLLERS:PATH", the unified one with no controllers. */
static void move_to_own_cgroup(void)
{
	char buf[4096], mount[PATH_MAX];
	char *ctrls[64], *cgs[64];
	int n = 0;
	if (read_small("/proc/self/cgroup", buf, sizeof buf) <= 0)
		return;
	for (char *line = buf, *next; line && *line && n < 64; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		char *ctrl = strchr(line, ':'), *cg = ctrl ? strchr(ctrl + 1, ':') : NULL;
		if (!cg)
			continue;
		*cg = 0;
		ctrls[n] = ctrl + 1;
		cgs[n++] = cg + 1;
	}
	for (int i = 0; i < n; i++) /* unified: at .../unified on a hybrid host */
		if (!*ctrls[i] && (write_self_at("/sys/fs/cgroup/unified", cgs[i]) == 0 ||
				   write_self_at("/sys/fs/cgroup", cgs[i]) == 0))
			return;
	for (int i = 0; i < n; i++) { /* v1: /sys/fs/cgroup/CONTROLLERS, name=X at X */
		const char *ctrl = strncmp(ctrls[i], "name=", 5) == 0 ? ctrls[i] + 5 : ctrls[i];
		if (*ctrl && snprintf(mount, sizeof mount, "/sys/fs/cgroup/%s", ctrl) <
				     (int)sizeof mount && write_self_at(mount, cgs[i]) == 0)
			return;
	}
}

int prime_wanted;

void prime_cgroup_attach(void)
{
	static int done;
	if (!prime_wanted || done || geteuid() != 0)
		return;
	done = 1;
	pid_t mid = fork();
	if (mid > 0) {
		while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
			;
		return;
	}
	if (mid < 0)
		return;
	if (fork() != 0)
		_exit(0);
	if (syscall(SYS_close_range, 0, ~0U, 0) < 0)
		for (int i = 0; i < 1024; i++)
			close(i);
	move_to_own_cgroup();
	_exit(0);
}
