/*
 * emergence-shim: executes a container plan between clone and exec.
 *
 * Python decides everything (order, flags, paths, limits) and writes a plan:
 * a flat list of primitive operations.  This program only interprets it, so
 * no Python code ever runs inside the container, nothing of the interpreter
 * is charged to the container's cgroup, and /proc/<pid>/exe of the container
 * init (before its execve) is this binary, run from a sealed memfd.
 *
 * Process shape:  python --posix_spawn--> shim (launcher)
 *                 launcher --clone(CLONE_PARENT|CLONE_NEW*)--> init
 * The init is a sibling of the launcher, i.e. a child of the Python process,
 * which can wait for it (`run`) or exit and let it be reparented (`create`).
 *
 * Invoked as: emergence-shim PLAN_FD STATUS_FD
 * Plan wire format (PLAN_FD): "EMPLAN1\0", then records
 *     u32 op, u32 nargs, nargs * (u32 len, len bytes incl. trailing NUL)
 * Status channel (STATUS_FD): text lines to the caller
 *     "pid N"            host pid of the init (sent by the launcher)
 *     "ready"            init reached the start barrier
 *     "error ERRNO TEXT" an operation failed; TEXT names it
 */
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

static struct op *ops;
static size_t nops;
static int status_fd = -1;
static const char *current_what = "shim";

/* State carried between operations inside the init. */
static int root_fd = -1;     /* the container rootfs, before pivot */
static int state_fd = -1;    /* O_PATH fd of the state dir (barrier fifo) */
static int cwd_fd = -1;      /* resolved process.cwd */
static int fifo_fd = -1;     /* the start barrier, open while start hooks run */
static char exec_path[PATH_MAX];
static void say(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    int n;

    if (status_fd < 0)
        return;
    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof(buf) - 2)
        n = sizeof(buf) - 2;
    buf[n++] = '\n';
    while (write(status_fd, buf, n) < 0 && errno == EINTR)
        ;
}

static void die_errno(int err)
{
    say("error %d %s", err, current_what);
    if (fifo_fd >= 0) {
        /* after the barrier `start` is the one listening */
        char buf[1024];
        int n = snprintf(buf, sizeof(buf), "error %d %s\n", err, current_what);
        if (n > 0 && write(fifo_fd, buf, n < (int)sizeof(buf) ? n : (int)sizeof(buf) - 1) < 0)
            _exit(127);
    }
    _exit(127);
}

static void die(void)
{
    die_errno(errno);
}

static unsigned long long num(const char *s)
{
    return strtoull(s, NULL, 0);
}

#define NS_SLOTS 8
static int ns_fds[NS_SLOTS] = {-1, -1, -1, -1, -1, -1, -1, -1};

/* Joining a namespace by an fd opened earlier: after joining the mount
 * namespace, /proc/<pid>/ns of the target may no longer resolve. */
static int ns_slot(const char *s)
{
    unsigned long long n = strtoull(s, NULL, 10);
    if (n >= NS_SLOTS) {
        errno = EINVAL;
        return -1;
    }
    return (int)n;
}

static void do_ns_open(char **a)
{
    int slot = ns_slot(a[2]);
    if (slot < 0)
        die();
    ns_fds[slot] = open(a[1], O_RDONLY | O_CLOEXEC);
    if (ns_fds[slot] < 0)
        die();
}

static void do_ns_enter(char **a)
{
    int slot = ns_slot(a[1]);
    if (slot < 0 || ns_fds[slot] < 0)
        die_errno(EBADF);
    if (setns(ns_fds[slot], (int)strtol(a[2], NULL, 0)) < 0)
        die();
    close(ns_fds[slot]);
    ns_fds[slot] = -1;
}

/* ---- plan reading ---------------------------------------------------- */

/* The plan arrives in a memfd: read it whole, then point the op arguments
 * into that buffer (each field is NUL-terminated by the writer). */
static void load_plan(int fd)
{
    struct stat st;
    char *buf, *p, *end;
    size_t cap = 64;

    current_what = "reading the plan";
    if (fstat(fd, &st) < 0 || st.st_size < 8)
        die_errno(EINVAL);
    buf = malloc(st.st_size);
    if (!buf || pread(fd, buf, st.st_size, 0) != st.st_size || memcmp(buf, "EMPLAN1", 8) != 0)
        die_errno(EINVAL);
    close(fd);
    ops = calloc(cap, sizeof(*ops));
    if (!ops)
        die();
    p = buf + 8;
    end = buf + st.st_size;
    while (p < end) {
        struct op *o;
        uint32_t hdr[2];
        if (end - p < (ptrdiff_t)sizeof(hdr))
            die_errno(EINVAL);
        memcpy(hdr, p, sizeof(hdr));
        p += sizeof(hdr);
        if (nops == cap) {
            cap *= 2;
            ops = realloc(ops, cap * sizeof(*ops));
            if (!ops)
                die();
        }
        o = &ops[nops++];
        o->code = hdr[0];
        o->nargs = hdr[1];
        o->args = calloc(o->nargs + 1, sizeof(char *));
        if (!o->args)
            die();
        for (uint32_t i = 0; i < o->nargs; i++) {
            uint32_t len;
            if (end - p < (ptrdiff_t)sizeof(len))
                die_errno(EINVAL);
            memcpy(&len, p, sizeof(len));
            p += sizeof(len);
            if (len == 0 || (size_t)(end - p) < len || p[len - 1] != '\0')
                die_errno(EINVAL);
            o->args[i] = p;
            p += len;
        }
    }
}

/* ---- path resolution inside the rootfs ------------------------------- */

/* Open PATH beneath root_fd as if root_fd were "/": symlinks (absolute or
 * "..") can never lead outside, magic links are refused. */
static int open_in_root(const char *path, int flags)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_CLOEXEC),
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    while (*path == '/')
        path++;
    if (*path == '\0')
        path = ".";
    return syscall(SYS_openat2, root_fd, path, &how, sizeof(how));
}

/* Like open_in_root, creating missing components: directories, and the
 * last one as a directory or as an empty file.  A dangling symlink on the
 * way is followed the way the kernel would inside the rootfs, and its
 * target created there; nothing is ever created outside. */
static int mkpath_depth(const char *path, int last_is_file, int depth)
{
    char buf[PATH_MAX], target[PATH_MAX], next[PATH_MAX];
    char *slash, *name;
    const char *dir;
    int fd, parent, rc;
    ssize_t n;

    fd = open_in_root(path, O_PATH);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    if (depth > 40) {
        errno = ELOOP;
        return -1;
    }
    if (strlen(path) >= sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(buf, path);
    while ((slash = strrchr(buf, '/')) != NULL && slash[1] == '\0' && slash != buf)
        *slash = '\0'; /* trailing slashes */
    slash = strrchr(buf, '/');
    if (slash == NULL) {
        dir = "/";
        name = buf;
    } else {
        *slash = '\0';
        dir = *buf ? buf : "/";
        name = slash + 1;
    }
    parent = mkpath_depth(dir, 0, depth + 1);
    if (parent < 0)
        return -1;
    if (last_is_file) {
        rc = openat(parent, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (rc >= 0)
            close(rc);
    } else {
        rc = mkdirat(parent, name, 0755);
    }
    if (rc < 0 && errno != EEXIST) {
        close(parent);
        return -1;
    }
    fd = open_in_root(path, O_PATH);
    if (fd >= 0 || errno != ENOENT) {
        close(parent);
        return fd;
    }
    /* NAME exists but resolves to nothing: a dangling symlink. */
    n = readlinkat(parent, name, target, sizeof(target) - 1);
    close(parent);
    if (n < 0)
        return -1;
    target[n] = '\0';
    if (target[0] == '/')
        rc = snprintf(next, sizeof(next), "%s", target);
    else
        rc = snprintf(next, sizeof(next), "%s/%s", dir, target);
    if (rc < 0 || rc >= (int)sizeof(next)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return mkpath_depth(next, last_is_file, depth + 1);
}

static int mkpath_in_root(const char *path, int last_is_file)
{
    return mkpath_depth(path, last_is_file, 0);
}

/* The path to hand mount(2) for an fd that open_in_root checked: its magic
 * link.  A container that mounts no /proc has none after pivot_root; then
 * the checked PATH itself serves, as nothing runs in the container yet and
 * every path resolves inside its root.  Before pivot_root (PATH NULL) the
 * host's /proc is always there. */
static const char *fd_path(char *buf, size_t len, int fd, const char *path)
{
    snprintf(buf, len, "/proc/self/fd/%d", fd);
    return path == NULL || access(buf, F_OK) == 0 ? buf : path;
}

/* ---- operations ------------------------------------------------------ */

static void do_mount(char **a)
{
    /* a: what, source, target, fstype, flags, data, resolve (0 plain, 1 dir,
     *    2 file; | 4 copy the dir's files up, | 8 keep the dir's mode) */
    const char *src = *a[1] ? a[1] : NULL;
    const char *fstype = *a[3] ? a[3] : NULL;
    unsigned long flags = num(a[4]);
    const char *data = *a[5] ? a[5] : NULL;
    int resolve = (int)num(a[6]);
    int kind = resolve & 3, copy = resolve & 4, keep = resolve & 8;
    char target[64], moded[4096];
    struct stat st;
    int fd = -1, under = -1, top;

    if (kind) {
        fd = keep ? open_in_root(a[2], O_PATH) : -1;
        if (fd >= 0 && fstat(fd, &st) == 0) {
            /* a mount point that was there keeps its mode (a tmpfs without mode=) */
            if (snprintf(moded, sizeof(moded), "mode=%o%s%s", (unsigned)(st.st_mode & 07777),
                         data ? "," : "", data ? data : "") >= (int)sizeof(moded)) {
                errno = E2BIG;
                die();
            }
            data = moded;
        }
        if (fd < 0)
            fd = mkpath_in_root(a[2], kind == 2);
        if (fd < 0)
            die();
        /* opened before the mount, this still reaches the directory beneath */
        if (copy && (under = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
            die();
        if (mount(src, fd_path(target, sizeof(target), fd, NULL), fstype, flags, data) < 0)
            die();
        close(fd);
        if (under >= 0) {
            top = open_in_root(a[2], O_RDONLY | O_DIRECTORY);
            if (top < 0 || copy_up(under, top) < 0)
                die();
        }
    } else if (mount(src, a[2], fstype, flags, data) < 0) {
        die();
    }
}

/* Remount, bind or propagation change on an existing in-root path: the
 * target is re-resolved so it names the mount just made. */
static void do_mount_existing(char **a)
{
    /* a: what, target, flags, data */
    char target[64];
    int fd;

    if (strcmp(a[1], "/") == 0) {
        /* the root itself: no symlink to resolve, and no /proc needed (a
         * read-only rootfs may mount none) */
        if (mount(NULL, "/", NULL, num(a[2]), *a[3] ? a[3] : NULL) < 0)
            die();
        return;
    }
    fd = open_in_root(a[1], O_PATH);
    if (fd < 0)
        die();
    if (mount(NULL, fd_path(target, sizeof(target), fd, a[1]), NULL, num(a[2]),
              *a[3] ? a[3] : NULL) < 0)
        die();
    close(fd);
}

/* Recursive mount attributes (rro, rnosuid, ...): mount_setattr on the
 * in-root path, for the whole tree below it.  No /proc needed. */
static void do_setattr(char **a)
{
    /* a: what, in-root path, attr_set, attr_clr */
    struct mount_attr attr = {.attr_set = num(a[2]), .attr_clr = num(a[3])};
    int fd = open_in_root(a[1], O_PATH);
    if (fd < 0)
        die();
    if (mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof(attr)) < 0)
        die();
    close(fd);
}

/* Idmapped bind mounts.  The launcher, still in the host's user namespace,
 * makes a user namespace holding the mount's id map (a child that only
 * waits), clones the source tree detached and marks it idmapped; the init
 * later moves the tree into place inside the rootfs. */
static int tree_fds[NS_SLOTS] = {-1, -1, -1, -1, -1, -1, -1, -1};

static int idmap_userns(const char *uid_map, const char *gid_map)
{
    int hold[2], fd = -1, err = 0;
    char path[64];
    const char *maps[2][2] = {{"uid_map", uid_map}, {"gid_map", gid_map}};
    pid_t child;

    if (pipe2(hold, O_CLOEXEC) < 0)
        return -1;
    child = (pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (child < 0) {
        err = errno;
        goto out;
    }
    if (child == 0) {
        char c;
        close(hold[1]);
        _exit(read(hold[0], &c, 1) < 0);
    }
    for (int m = 0; m < 2 && !err; m++) {
        int mf;
        size_t len = strlen(maps[m][1]);
        snprintf(path, sizeof(path), "/proc/%d/%s", child, maps[m][0]);
        mf = open(path, O_WRONLY | O_CLOEXEC);
        if (mf < 0 || write(mf, maps[m][1], len) != (ssize_t)len)
            err = errno;
        if (mf >= 0)
            close(mf);
    }
    if (!err) {
        snprintf(path, sizeof(path), "/proc/%d/ns/user", child);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            err = errno;
    }
    close(hold[1]);
    hold[1] = -1;
    waitpid(child, NULL, 0);
out:
    close(hold[0]);
    if (hold[1] >= 0)
        close(hold[1]);
    errno = err;
    return err ? -1 : fd;
}

static void do_idmap_tree(char **a)
{
    /* a: what, slot, source, uid_map, gid_map, clone recursively (0/1), idmap recursively (0/1) */
    int slot = ns_slot(a[1]), userns, tree;
    struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP};

    if (slot < 0)
        die();
    userns = idmap_userns(a[3], a[4]);
    if (userns < 0)
        die();
    tree = open_tree(AT_FDCWD, a[2], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC |
                     (num(a[5]) ? AT_RECURSIVE : 0));
    if (tree < 0)
        die();
    attr.userns_fd = (uint64_t)userns;
    if (mount_setattr(tree, "", AT_EMPTY_PATH | (num(a[6]) ? AT_RECURSIVE : 0),
                      &attr, sizeof(attr)) < 0)
        die();
    close(userns);
    tree_fds[slot] = tree;
}

static void do_move_tree(char **a)
{
    /* a: what, slot, in-root target, resolve (1 dir, 2 file) */
    int slot = ns_slot(a[1]), target;

    if (slot < 0 || tree_fds[slot] < 0)
        die_errno(EBADF);
    target = mkpath_in_root(a[2], num(a[3]) == 2);
    if (target < 0)
        die();
    if (move_mount(tree_fds[slot], "", target, "",
                   MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        die();
    close(target);
    close(tree_fds[slot]);
    tree_fds[slot] = -1;
}

static void do_mknod(char **a)
{
    /* a: what, path, mode (incl. type bits), major, minor, uid, gid */
    char buf[PATH_MAX], *slash, *name;
    int parent;
    mode_t mode = (mode_t)num(a[2]);

    if (strlen(a[1]) >= sizeof(buf))
        die_errno(ENAMETOOLONG);
    strcpy(buf, a[1]);
    slash = strrchr(buf, '/');
    if (!slash)
        die_errno(EINVAL);
    *slash = '\0';
    name = slash + 1;
    parent = mkpath_in_root(*buf ? buf : "/", 0);
    if (parent < 0)
        die();
    unlinkat(parent, name, 0);
    if (mknodat(parent, name, mode, makedev(num(a[3]), num(a[4]))) < 0)
        die();
    if (fchmodat(parent, name, mode & 07777, 0) < 0)
        die();
    if (fchownat(parent, name, (uid_t)num(a[5]), (gid_t)num(a[6]), AT_SYMLINK_NOFOLLOW) < 0)
        die();
    close(parent);
}

static void do_symlink(char **a)
{
    /* a: what, target, linkpath */
    char buf[PATH_MAX], *slash;
    int parent;

    if (strlen(a[2]) >= sizeof(buf))
        die_errno(ENAMETOOLONG);
    strcpy(buf, a[2]);
    slash = strrchr(buf, '/');
    if (!slash)
        die_errno(EINVAL);
    *slash = '\0';
    parent = mkpath_in_root(*buf ? buf : "/", 0);
    if (parent < 0)
        die();
    if (symlinkat(a[1], parent, slash + 1) < 0 && errno != EEXIST)
        die();
    close(parent);
}

static void do_set_root(char **a)
{
    /* a: what, rootfs absolute path */
    if (root_fd >= 0)
        close(root_fd);
    root_fd = open(a[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        die();
}

/* After pivot_root or chroot: "/" is the rootfs, and in-root lookups start there. */
static void root_is_now_slash(void)
{
    if (chdir("/") < 0)
        die();
    close(root_fd);
    root_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        die();
}

static void do_pivot(char **a)
{
    int old_root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    (void)a;
    if (old_root < 0 || fchdir(root_fd) < 0)
        die();
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        die();
    /* The old root is now stacked on top of the new one.  Through an fd of
     * it (not ".", which names the new root), make it a slave so detaching
     * it cannot propagate to the host, then drop it. */
    if (fchdir(old_root) < 0)
        die();
    if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0)
        die();
    if (umount2(".", MNT_DETACH) < 0)
        die();
    close(old_root);
    root_is_now_slash();
}

static void do_chroot(char **a)
{
    /* a: what, "move" (own mount namespace: move the rootfs onto /) or
     * "plain" (the host's mount namespace: only change this process's root) */
    if (fchdir(root_fd) < 0)
        die();
    if (strcmp(a[1], "move") == 0 && mount(".", "/", NULL, MS_MOVE, NULL) < 0)
        die();
    if (chroot(".") < 0)
        die();
    root_is_now_slash();
}

static void do_write(char **a)
{
    /* a: what, path, content */
    int fd = open(a[1], O_WRONLY | O_CLOEXEC);
    size_t len = strlen(a[2]);
    if (fd < 0)
        die();
    if (write(fd, a[2], len) != (ssize_t)len)
        die();
    close(fd);
}

/* maskedPaths: hide a file behind /dev/null or a directory behind an empty
 * read-only tmpfs; a path that does not exist needs no mask. */
static void do_mask(char **a)
{
    char target[64];
    const char *path;
    struct stat st;
    int fd = open_in_root(a[1], O_PATH | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return;
        die();
    }
    if (fstat(fd, &st) < 0)
        die();
    path = fd_path(target, sizeof(target), fd, a[1]);
    if (S_ISDIR(st.st_mode)) {
        if (mount("tmpfs", path, "tmpfs", MS_RDONLY, "size=0,mode=755") < 0)
            die();
    } else if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0) {
        die();
    }
    close(fd);
}

static void do_readonly(char **a)
{
    char target[64];
    const char *path;
    int fd = open_in_root(a[1], O_PATH | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return;
        die();
    }
    path = fd_path(target, sizeof(target), fd, a[1]);
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0)
        die();
    close(fd);
    fd = open_in_root(a[1], O_PATH | O_NOFOLLOW);
    if (fd < 0)
        die();
    path = fd_path(target, sizeof(target), fd, a[1]);
    if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        die();
    close(fd);
}

static void do_rlimit(char **a)
{
    /* a: what, resource, soft, hard */
    struct rlimit rl = {.rlim_cur = num(a[2]), .rlim_max = num(a[3])};
    if (setrlimit((int)num(a[1]), &rl) < 0)
        die();
}

static void do_user(char **a)
{
    /* a: what, uid, gid, umask (or -1), additional gids... */
    size_t ngroups = 0;
    gid_t groups[NGROUPS_MAX];
    for (char **g = a + 4; *g && ngroups < NGROUPS_MAX; g++)
        groups[ngroups++] = (gid_t)num(*g);
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        die();
    if (setgroups(ngroups, groups) < 0 && !(errno == EPERM && ngroups == 0))
        die();
    if (setresgid(num(a[2]), num(a[2]), num(a[2])) < 0)
        die();
    if (setresuid(num(a[1]), num(a[1]), num(a[1])) < 0)
        die();
    if (strcmp(a[3], "-1") != 0)
        umask((mode_t)num(a[3]));
}

static int last_cap(void)
{
    int last = CAP_LAST_CAP;
    FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
    if (f) {
        if (fscanf(f, "%d", &last) != 1)
            last = CAP_LAST_CAP;
        fclose(f);
    }
    return last;
}

static void do_caps_bounding(char **a)
{
    /* a: what, bounding set to keep (u64 mask) */
    uint64_t keep = num(a[1]);
    int last = last_cap();
    for (int c = 0; c <= last; c++)
        if (!(keep & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            die();
}

static void do_caps(char **a)
{
    /* a: what, effective, permitted, inheritable, ambient (u64 masks) */
    uint64_t eff = num(a[1]), prm = num(a[2]), inh = num(a[3]), amb = num(a[4]);
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    int last = last_cap();

    data[0].effective = (uint32_t)eff;
    data[1].effective = (uint32_t)(eff >> 32);
    data[0].permitted = (uint32_t)prm;
    data[1].permitted = (uint32_t)(prm >> 32);
    data[0].inheritable = (uint32_t)inh;
    data[1].inheritable = (uint32_t)(inh >> 32);
    if (syscall(SYS_capset, &hdr, data) < 0)
        die();
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        die();
    for (int c = 0; c <= last; c++)
        if ((amb & (1ULL << c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
            die();
}

static void do_seccomp(char **a, uint32_t nargs)
{
    /* a: what, flags, bpf program bytes (hex) */
    size_t hexlen = strlen(a[2]), n = hexlen / 2;
    unsigned char *code = malloc(n ? n : 1);
    struct sock_fprog prog;
    (void)nargs;
    if (!code)
        die();
    for (size_t i = 0; i < n; i++) {
        unsigned int byte;
        if (sscanf(a[2] + 2 * i, "%2x", &byte) != 1)
            die_errno(EINVAL);
        code[i] = (unsigned char)byte;
    }
    prog.len = (unsigned short)(n / sizeof(struct sock_filter));
    prog.filter = (struct sock_filter *)code;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, (unsigned int)num(a[1]), &prog) < 0)
        die();
}

/* Resolve process.cwd inside the container now, so a bad cwd fails create;
 * fchdir happens after the barrier.  Magic links (/proc/self/fd/N) are
 * refused, so no host directory can become the cwd (CVE-2024-21626). */
static void do_resolve_cwd(char **a)
{
    cwd_fd = open_in_root(a[1], O_PATH | O_DIRECTORY);
    if (cwd_fd < 0)
        die();
}

static void do_mkdir(char **a)
{
    int fd = mkpath_in_root(a[1], 0);
    if (fd < 0)
        die();
    close(fd);
}

static void do_link_up(char **a)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die();
    memset(&ifr, 0, sizeof(ifr));
    strncpy(ifr.ifr_name, a[1], IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        die();
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        die();
    close(s);
}

/* The kernel's struct sched_attr (glibc 2.36 has no wrapper). */
struct sched_attr_abi {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
};

static void do_sched(char **a)
{
    struct sched_attr_abi at;
    memset(&at, 0, sizeof(at));
    at.size = sizeof(at);
    at.sched_policy = (uint32_t)num(a[1]);
    at.sched_flags = num(a[2]);
    at.sched_nice = (int32_t)num(a[3]);
    at.sched_priority = (uint32_t)num(a[4]);
    at.sched_runtime = num(a[5]);
    at.sched_deadline = num(a[6]);
    at.sched_period = num(a[7]);
    if (syscall(SYS_sched_setattr, 0, &at, 0) < 0)
        die();
}

static void do_ioprio(char **a)
{
    if (syscall(SYS_ioprio_set, (int)num(a[1]), (int)num(a[2]), (int)num(a[3])) < 0)
        die();
}

static void do_mempolicy(char **a, uint32_t nargs)
{
    unsigned long mask[64];
    uint32_t words = nargs - 3, i;
    if (words > 64)
        die_errno(E2BIG);
    for (i = 0; i < words; i++)
        mask[i] = (unsigned long)num(a[3 + i]);
    if (syscall(SYS_set_mempolicy, (int)num(a[1]), words ? mask : NULL,
                (unsigned long)num(a[2])) < 0)
        die();
}

/* Find argv[0] the way execvp would, but with the container's PATH. */
static void do_resolve_exec(char **a)
{
    /* a: what, program, PATH */
    const char *prog = a[1], *p = a[2];
    struct stat st;

    if (strchr(prog, '/')) {
        snprintf(exec_path, sizeof(exec_path), "%s", prog);
        if (stat(exec_path, &st) < 0)
            die();
        if (!S_ISREG(st.st_mode))
            die_errno(EACCES);
        if (access(exec_path, X_OK) < 0)
            die();
        return;
    }
    while (p && *p) {
        const char *end = strchr(p, ':');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        snprintf(exec_path, sizeof(exec_path), "%.*s/%s", (int)len, len ? p : ".", prog);
        if (stat(exec_path, &st) == 0 && S_ISREG(st.st_mode) && access(exec_path, X_OK) == 0)
            return;
        p = end ? end + 1 : NULL;
    }
    die_errno(ENOENT);
}

/* A terminal for the process: a pty of the container's own devpts.  The
 * master goes to whoever listens on the console socket (SCM_RIGHTS, as runc
 * does); the slave becomes stdio and the controlling terminal. */
static void do_console(char **a)
{
    int sock = (int)num(a[1]);
    unsigned short rows = (unsigned short)num(a[2]), cols = (unsigned short)num(a[3]);
    int master, slave;
    char name[] = "/dev/ptmx";
    struct iovec iov = {.iov_base = name, .iov_len = sizeof(name) - 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *cmsg;
    int unlock = 0;

    master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        die();
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        die();
    slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
    if (slave < 0)
        die();
    if (rows && cols) {
        struct winsize ws = {.ws_row = rows, .ws_col = cols};
        if (ioctl(slave, TIOCSWINSZ, &ws) < 0)
            die();
    }
    memset(u.buf, 0, sizeof(u.buf));
    cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &master, sizeof(int));
    if (sendmsg(sock, &msg, 0) < 0)
        die();
    close(master);
    close(sock);
    if (dup2(slave, 0) < 0 || dup2(slave, 1) < 0 || dup2(slave, 2) < 0)
        die();
    if (slave > 2)
        close(slave);
    if (ioctl(0, TIOCSCTTY, 0) < 0)
        die();
}

static void do_ready(void)
{
    say("ready");
    close(status_fd);
    status_fd = -1;
}

/* The start barrier: opening the fifo for writing blocks until `start`
 * opens it for reading.  The state dir is reached through an fd opened
 * before pivot_root, so no /proc is needed inside the container. */
static void do_barrier(char **a)
{
    int fd;
    do {
        fd = openat(state_fd, a[1], O_WRONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        _exit(127);
    close(state_fd);
    state_fd = -1;
    fifo_fd = fd;
}

static void do_started(void)
{
    if (fifo_fd < 0)
        return;
    if (write(fifo_fd, "0", 1) != 1)
        _exit(127);
    close(fifo_fd);
    fifo_fd = -1;
}

static void do_sync(char **a)
{
    int fd = (int)num(a[1]);
    char c = 0;
    say("sync %s", a[2]);
    while (read(fd, &c, 1) < 0 && errno == EINTR)
        ;
    close(fd);
    if (c != 'g')
        _exit(127); /* the runtime gave up (a hook failed) and said why */
}

/* A hook run by the init, in the container's namespaces: the state on stdin,
 * killed after `timeout` seconds (0: no limit); any failure fails the step. */
static void do_hook(char **a)
{
    unsigned long timeout = num(a[1]);
    const char *path = a[2];
    size_t argc = num(a[4]);
    char **argv = calloc(argc + 2, sizeof(char *));
    char **envp = a + 5 + argc;
    char state[8192], pidbuf[32];
    static char msg[1024];
    const char *tmpl = a[3], *mark;
    int in[2], status;
    pid_t child;
    struct timespec tick = {0, 5 * 1000 * 1000};
    unsigned long waited_ms = 0;

    if (!argv)
        die();
    if (argc == 0) {
        argv[0] = (char *)path;
    } else {
        memcpy(argv, a + 5, argc * sizeof(char *));
    }
    snprintf(pidbuf, sizeof(pidbuf), "%d", getpid());
    mark = strstr(tmpl, "%PID%");
    if (mark)
        snprintf(state, sizeof(state), "%.*s%s%s", (int)(mark - tmpl), tmpl, pidbuf, mark + 5);
    else
        snprintf(state, sizeof(state), "%s", tmpl);
    if (pipe2(in, O_CLOEXEC) < 0)
        die();
    child = fork();
    if (child < 0)
        die();
    if (child == 0) {
        dup2(in[0], 0);
        execve(path, argv, envp);
        _exit(127);
    }
    close(in[0]);
    signal(SIGPIPE, SIG_IGN);
    if (write(in[1], state, strlen(state)) < 0 && errno != EPIPE)
        die();
    close(in[1]);
    for (;;) {
        pid_t r = waitpid(child, &status, WNOHANG);
        if (r == child)
            break;
        if (r < 0 && errno != EINTR)
            die();
        if (timeout && waited_ms >= timeout * 1000) {
            kill(child, SIGKILL);
            waitpid(child, &status, 0);
            snprintf(msg, sizeof(msg), "%s: did not finish within its timeout of %lus",
                     a[0], timeout);
            current_what = msg;
            die_errno(0);
        }
        nanosleep(&tick, NULL);
        waited_ms += 5;
    }
    free(argv);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
        snprintf(msg, sizeof(msg), "%s: could not be executed", a[0]);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        snprintf(msg, sizeof(msg), "%s: exited with status %d", a[0], WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(msg, sizeof(msg), "%s: killed by signal %d", a[0], WTERMSIG(status));
    } else {
        return;
    }
    current_what = msg;
    die_errno(0); /* errno 0: the message says it all */
}

static void do_exec(char **a, uint32_t nargs)
{
    /* a: what, preserved fd count, argc, argv..., env... */
    size_t argc = num(a[2]);
    char **argv = calloc(argc + 1, sizeof(char *));
    char **envp = a + 3 + argc;
    (void)nargs;

    if (!argv)
        _exit(127);
    memcpy(argv, a + 3, argc * sizeof(char *));

    if (cwd_fd >= 0) {
        if (fchdir(cwd_fd) < 0)
            _exit(127);
        close(cwd_fd);
    }
    if (root_fd >= 0)
        close(root_fd);
    /* Only stdio and fds the caller asked to preserve cross into the
     * container (CVE-2024-21626 class). */
    syscall(SYS_close_range, 3 + (unsigned int)num(a[1]), ~0U, CLOSE_RANGE_CLOEXEC);
    execve(exec_path, argv, envp);
    _exit(127);
}

static void run_op(struct op *o)
{
    char **a = o->args;
    current_what = o->nargs ? a[0] : "?";
    switch (o->code) {
    case OP_MOUNT:
        do_mount(a);
        break;
    case OP_MOUNT_EXISTING:
        do_mount_existing(a);
        break;
    case OP_SET_ROOT:
        do_set_root(a);
        break;
    case OP_MKNOD:
        do_mknod(a);
        break;
    case OP_SYMLINK:
        do_symlink(a);
        break;
    case OP_PIVOT_ROOT:
        do_pivot(a);
        break;
    case OP_CHROOT:
        do_chroot(a);
        break;
    case OP_WRITE:
        do_write(a);
        break;
    case OP_MASK:
        do_mask(a);
        break;
    case OP_READONLY:
        do_readonly(a);
        break;
    case OP_SETHOSTNAME:
        if (sethostname(a[1], strlen(a[1])) < 0)
            die();
        break;
    case OP_SETDOMAINNAME:
        if (setdomainname(a[1], strlen(a[1])) < 0)
            die();
        break;
    case OP_RLIMIT:
        do_rlimit(a);
        break;
    case OP_PERSONALITY:
        if (personality((unsigned long)num(a[1])) < 0)
            die();
        break;
    case OP_UNSHARE:
        if (unshare((int)num(a[1])) < 0)
            die();
        break;
    case OP_SETSID:
        if (setsid() < 0)
            die();
        break;
    case OP_BECOME_ROOT:
        if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
            die();
        break;
    case OP_OPEN_STATE:
        state_fd = open(a[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (state_fd < 0)
            die();
        break;
    case OP_USER:
        do_user(a);
        break;
    case OP_CAPS_BOUNDING:
        do_caps_bounding(a);
        break;
    case OP_CAPS:
        do_caps(a);
        break;
    case OP_SETNS: {
        int fd = open(a[1], O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, (int)num(a[2])) < 0)
            die();
        close(fd);
        break;
    }
    case OP_NS_OPEN:
        do_ns_open(a);
        break;
    case OP_NS_ENTER:
        do_ns_enter(a);
        break;
    case OP_NO_NEW_PRIVS:
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            die();
        break;
    case OP_SECCOMP:
        do_seccomp(a, o->nargs);
        break;
    case OP_RESOLVE_CWD:
        do_resolve_cwd(a);
        break;
    case OP_RESOLVE_EXEC:
        do_resolve_exec(a);
        break;
    case OP_READY:
        do_ready();
        break;
    case OP_CONSOLE:
        do_console(a);
        break;
    case OP_SYNC:
        do_sync(a);
        break;
    case OP_HOOK:
        do_hook(a);
        break;
    case OP_STARTED:
        do_started();
        break;
    case OP_FAIL:
        die_errno(0);
        break;
    case OP_BARRIER:
        do_barrier(a);
        break;
    case OP_MKDIR:
        do_mkdir(a);
        break;
    case OP_LINK_UP:
        do_link_up(a);
        break;
    case OP_SCHED:
        do_sched(a);
        break;
    case OP_IOPRIO:
        do_ioprio(a);
        break;
    case OP_SETATTR:
        do_setattr(a);
        break;
    case OP_IDMAP_TREE:
        do_idmap_tree(a);
        break;
    case OP_MOVE_TREE:
        do_move_tree(a);
        break;
    case OP_MEMPOLICY:
        do_mempolicy(a, o->nargs);
        break;
    case OP_CHDIR:
        if (chdir(a[1]) < 0)
            die();
        break;
    case OP_EXEC:
        do_exec(a, o->nargs);
        break;
    default:
        die_errno(EINVAL);
    }
}

/* ---- the launcher ---------------------------------------------------- */

int main(int argc, char **argv)
{
    size_t i = 0;
    int go[2], plan_fd = -1;
    pid_t pid;
    char path[128], c;

    if (argc == 3) {
        plan_fd = atoi(argv[1]);
        status_fd = atoi(argv[2]);
    }
    /* Anything but a caller-provided plan is a mistake, including a
     * container that execs /proc/self/exe while this binary is its exe. */
    if (argc != 3 || plan_fd < 3 || status_fd < 3 || fcntl(plan_fd, F_GETFD) < 0 ||
        fcntl(status_fd, F_GETFD) < 0) {
        status_fd = -1;
        static const char msg[] = "emergence-shim: internal helper of emergence, not to be run directly\n";
        if (write(2, msg, sizeof(msg) - 1) < 0)
            _exit(2);
        return 2;
    }
    /* Until exec, nothing else may ptrace or open our /proc entries. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* The launcher dies with the runtime that spawned it (a kill -9 of
     * `create`): nothing it would make could be recorded.  If that already
     * happened, nobody reads the status pipe: stop before making anything. */
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    {
        struct pollfd p = {.fd = status_fd, .events = 0};
        if (poll(&p, 1, 0) > 0 && (p.revents & POLLERR))
            _exit(127);
    }
    fcntl(status_fd, F_SETFD, FD_CLOEXEC);
    load_plan(plan_fd);

    /* Launcher part: join namespaces, then clone the init. */
    for (; i < nops && ops[i].code != OP_CLONE; i++) {
        char **a = ops[i].args;
        current_what = a[0];
        switch (ops[i].code) {
        case OP_SETNS:
        case OP_UNSHARE:
        case OP_WRITE:
        case OP_NS_OPEN:
        case OP_NS_ENTER:
        case OP_IDMAP_TREE:
            run_op(&ops[i]); /* the same primitive, in the launcher */
            break;
        default:
            die_errno(EINVAL);
        }
    }
    if (i == nops)
        die_errno(EINVAL);
    current_what = ops[i].args[0];
    if (pipe2(go, O_CLOEXEC) < 0)
        die();
    pid = (pid_t)syscall(SYS_clone, (unsigned long)num(ops[i].args[1]) | CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0)
        die();
    if (pid == 0) {
        close(go[1]);
        if (read(go[0], &c, 1) != 1)
            _exit(127); /* the launcher failed and said why */
        close(go[0]);
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        for (i++; i < nops && ops[i].code != OP_CHILD; i++)
            ;
        for (i++; i < nops; i++)
            run_op(&ops[i]);
        current_what = "the plan ended without exec";
        die_errno(EINVAL);
    }
    close(go[0]);
    /* Launcher, after clone: id maps and cgroups for the init. */
    for (i++; i < nops && ops[i].code != OP_CHILD; i++) {
        char **a = ops[i].args;
        current_what = a[0];
        switch (ops[i].code) {
        case OP_CHILD_WRITE:
            /* a: what, file under /proc/<pid>/ or "" with an absolute path, content */
            if (a[1][0] == '/')
                snprintf(path, sizeof(path), "%s", a[1]);
            else
                snprintf(path, sizeof(path), "/proc/%d/%s", pid, a[1]);
            {
                char content[64];
                const char *text = a[2];
                if (strcmp(text, "$PID") == 0) {
                    snprintf(content, sizeof(content), "%d", pid);
                    text = content;
                }
                int fd = open(path, O_WRONLY | O_CLOEXEC);
                size_t len = strlen(text);
                if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
                    int err = errno;
                    kill(pid, SIGKILL);
                    die_errno(err);
                }
                close(fd);
            }
            break;
        default:
            kill(pid, SIGKILL);
            die_errno(EINVAL);
        }
    }
    say("pid %d", pid);
    if (write(go[1], "g", 1) != 1) {
        int err = errno;
        kill(pid, SIGKILL);
        die_errno(err);
    }
    return 0;
}
