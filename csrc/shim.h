/* Shared by the shim's parts: includes, the plan's op record, the state the
 * init carries between operations, and each operation's entry point. */
#ifndef EMERGENCE_SHIM_H
#define EMERGENCE_SHIM_H
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <grp.h>
#include <termios.h>
#include <time.h>

#include "copyup.h"
#include "plan.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

struct op {
    uint32_t code;
    uint32_t nargs;
    char **args;
};

/* Reporting (shim.c): a status line to the caller; die ends the shim. */
extern int status_fd;
extern const char *current_what;

/* State carried between operations inside the init (defined in shim.c). */
extern int root_fd;      /* the container rootfs, before pivot */
extern int state_fd;     /* O_PATH fd of the state dir (barrier fifo) */
extern int cwd_fd;       /* resolved process.cwd */
extern int fifo_fd;      /* the start barrier, open while start hooks run */
extern char exec_path[PATH_MAX];

/* Slots for namespace and mount-tree fds kept between operations. */
#define NS_SLOTS 8
int ns_slot(const char *s);

/* rootfs.c */
int open_in_root(const char *path, int flags);
int mkpath_in_root(const char *path, int last_is_file);
const char *fd_path(char *buf, size_t len, int fd, const char *path);
void do_mount(char **a);
void do_mount_existing(char **a);
void do_setattr(char **a);
void do_idmap_tree(char **a);
void do_move_tree(char **a);
void do_mknod(char **a);
void do_symlink(char **a);
void do_set_root(char **a);
void do_pivot(char **a);
void do_chroot(char **a);
void do_mask(char **a);
void do_readonly(char **a);
void do_resolve_cwd(char **a);
void do_mkdir(char **a);
void do_fd_channel(char **a);
int send_source(pid_t pid, char **a);
void do_mount_source(char **a);

/* process.c */
void do_rlimit(char **a);
void do_user(char **a);
void do_caps_bounding(char **a);
void do_caps(char **a);
void do_link_up(char **a);
void do_sched(char **a);
void do_ioprio(char **a);
void do_mempolicy(char **a, uint32_t nargs);
void do_resolve_exec(char **a);
void do_console(char **a);
void do_exec(char **a, uint32_t nargs);
void do_chown_stdio(char **a);

/* seccomp.c */
void do_seccomp(char **a, uint32_t nargs);

/* sync.c */
void do_ready(void);
void do_barrier(char **a);
void do_started(void);
void do_sync(char **a);
void do_hook(char **a);

/* shim.c */
void say(const char *fmt, ...);
__attribute__((noreturn)) void die_errno(int err);
__attribute__((noreturn)) void die(void);
unsigned long long num(const char *s);

#endif
