/* What the front-end's parts share: front.c (main: which planner, the
 * hand-over, serving the worker), front_wire.c (records), front_child.c
 * (SPAWN, WAIT, the children of a dead worker), front_trust.c (whom a
 * planner's socket may belong to, the deadline), front_demand.c (a
 * planner started on demand) and front_prime.c (the cgroup lock primed). */
#ifndef EMERGENCE_FRONT_H
#define EMERGENCE_FRONT_H
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
extern char **g_argv;
extern double timeout, started;

/* A record: fields appended NUL-terminated. */
struct msg {
	char buf[MAX_MSG];
	size_t len;
	int fds[MAX_FDS];
	int nfds;
};

/* front.c */
const char *program(void);
void cold(void) __attribute__((noreturn));

/* front_wire.c */
int put(struct msg *m, const char *s);
int putnum(struct msg *m, long v);
int send_msg(int sock, struct msg *m);
ssize_t recv_msg(int sock, struct msg *m, char **f, int maxf, int *nf);
int inherited_fds(struct msg *m, char *nums, size_t size);

/* front_child.c */
void do_spawn(int sock, struct msg *m, char **f, int nf);
int do_wait(int sock, char **f, int nf);
void kill_children(void);
ssize_t read_small(const char *path, char *buf, size_t size);

/* front_trust.c */
double timeout_seconds(void);
void too_slow(const char *path, double timeout) __attribute__((noreturn));
double now(void);
void set_send_timeout(int sock, double seconds);
int planner_at(const char *path);

/* front_demand.c */
int demand_path(char *out, size_t size, const char *root, const char *name);
void start_planner(const char *root);

/* front_prime.c: once, if prime_wanted */
extern int prime_wanted;
void prime_cgroup_attach(void);

#endif
