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
 * descriptors in SCM_RIGHTS; emergence/node/worker.py is the other side and
 * documents the protocol.
 */
#include "front.h"

char **g_argv;
static volatile pid_t worker = 0;

/* Which program we are: `emergence`, or `emergence-cni` (the same front-end,
 * installed under the CNI plugin's name); its cold path is NAME-py. */
const char *program(void)
{
	const char *base = strrchr(g_argv[0], '/');
	base = base ? base + 1 : g_argv[0];
	return strcmp(base, "emergence-cni") == 0 ? "emergence-cni" : "emergence";
}

/* NAME-py is setup.py's sh/Python polyglot, whose sh part only executes a
 * Python with -sS on the file itself: done here, the shell's start (~0.5 ms
 * of every cold call) is spared.  Anything else at PATH (not in that form)
 * is left to execv. */
static void exec_polyglot(const char *path)
{
	static const char first[] = "#!/bin/sh\n\"exec\" \"", rest[] = "\" \"-sS\" \"$0\" \"$@\"\n";
	char head[PATH_MAX + 64];
	if (read_small(path, head, sizeof head) <= 0)
		return;
	if (strncmp(head, first, sizeof first - 1) != 0)
		return;
	char *python = head + sizeof first - 1, *end = strstr(python, rest);
	if (!end || python[0] != '/' || memchr(python, '\n', end - python) ||
	    memchr(python, '"', end - python) || memchr(python, '$', end - python) ||
	    memchr(python, '\\', end - python))
		return;
	*end = 0;
	int argc = 0;
	while (g_argv[argc])
		argc++;
	char **args = calloc(argc + 3, sizeof *args);
	if (!args)
		return;
	args[0] = python;
	args[1] = "-sS";
	args[2] = (char *)path;
	for (int i = 1; i < argc; i++)
		args[i + 2] = g_argv[i];
	execv(python, args);
	free(args);
}

void cold(void) __attribute__((noreturn));
void cold(void)
{
	char self[PATH_MAX], path[PATH_MAX + 16];
	prime_cgroup_attach();
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			snprintf(path, sizeof path, "%s/%s-py", self, program());
			exec_polyglot(path);
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

/* The verbs that move a process into a container's cgroups. */
static int attaches(const char *verb)
{
	return verb && (strcmp(verb, "run") == 0 || strcmp(verb, "create") == 0 ||
			strcmp(verb, "exec") == 0);
}

double timeout, started;

int main(int argc, char **argv)
{
	(void)argc;
	g_argv = argv;
	struct call c = { 0 };
	scan(argv, &c);
	/* front_prime.c: the kernel's wait for cgroup moves, beside the call */
	prime_wanted = attaches(c.verb) && strcmp(program(), "emergence") == 0;
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
	prime_cgroup_attach(); /* while the worker reads HELLO */

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
