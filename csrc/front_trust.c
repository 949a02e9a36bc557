/* Whom the front-end hands a call to: a planner socket owned by root (or the
 * caller) that nobody else may write, served by root (SO_PEERCRED), taking
 * the call within the deadline. */
#include "front.h"

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
double timeout_seconds(void)
{
	const char *s = getenv("EMERGENCE_PLANNER_TIMEOUT");
	char *end;
	double v = s && *s ? strtod(s, &end) : 0;
	return v > 0 && v <= 3600 && *end == 0 ? v : DEFAULT_TIMEOUT;
}

void too_slow(const char *path, double timeout) __attribute__((noreturn));
void too_slow(const char *path, double timeout)
{
	fprintf(stderr, "emergence: the node's planner at %s did not answer within %g s; "
		"running without the node\n", path, timeout);
	cold();
}

double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

void set_send_timeout(int sock, double seconds)
{
	struct timeval tv = { .tv_sec = (time_t)seconds,
			      .tv_usec = (suseconds_t)((seconds - (time_t)seconds) * 1e6) };
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* A connection to the planner at PATH, checked: -1 when none is there (no
 * socket, or one nobody serves: a planner that died); a socket we may not
 * trust, or one that does not answer in time, is the cold path. */
int planner_at(const char *path)
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
