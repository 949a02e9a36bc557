/* The container's filesystem: paths resolved beneath the rootfs, mounts,
 * id-mapped trees, device nodes, pivot_root and the masked/read-only paths. */

#include "shim.h"

/* Open PATH beneath root_fd as if root_fd were "/": symlinks (absolute or
 * "..") can never lead outside, magic links are refused. */
int open_in_root(const char *path, int flags)
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

int mkpath_in_root(const char *path, int last_is_file)
{
    return mkpath_depth(path, last_is_file, 0);
}

/* The path to hand mount(2) for an fd that open_in_root checked: its magic
 * link.  A container that mounts no /proc has none after pivot_root; then
 * the checked PATH itself serves, as nothing runs in the container yet and
 * every path resolves inside its root.  Before pivot_root (PATH NULL) the
 * host's /proc is always there. */
const char *fd_path(char *buf, size_t len, int fd, const char *path)
{
    snprintf(buf, len, "/proc/self/fd/%d", fd);
    return path == NULL || access(buf, F_OK) == 0 ? buf : path;
}

void do_mount(char **a)
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
void do_mount_existing(char **a)
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
void do_setattr(char **a)
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

void do_idmap_tree(char **a)
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

void do_move_tree(char **a)
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

void do_mknod(char **a)
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
    if (mknodat(parent, name, mode, makedev(num(a[3]), num(a[4]))) < 0) {
        if (errno != EEXIST)
            die();
        close(parent); /* already in the rootfs: left as it is, as runc and crun do */
        return;
    }
    if (fchmodat(parent, name, mode & 07777, 0) < 0)
        die();
    if (fchownat(parent, name, (uid_t)num(a[5]), (gid_t)num(a[6]), AT_SYMLINK_NOFOLLOW) < 0)
        die();
    close(parent);
}

void do_symlink(char **a)
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

void do_set_root(char **a)
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

void do_pivot(char **a)
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

void do_chroot(char **a)
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

/* maskedPaths: hide a file behind /dev/null or a directory behind an empty
 * read-only tmpfs; a path that does not exist needs no mask. */
void do_mask(char **a)
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

void do_readonly(char **a)
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

/* Resolve process.cwd inside the container now, so a bad cwd fails create;
 * fchdir happens after the barrier.  Magic links (/proc/self/fd/N) are
 * refused, so no host directory can become the cwd (CVE-2024-21626). */
void do_resolve_cwd(char **a)
{
    cwd_fd = open_in_root(a[1], O_PATH | O_DIRECTORY);
    if (cwd_fd < 0)
        die();
}

void do_mkdir(char **a)
{
    int fd = mkpath_in_root(a[1], 0);
    if (fd < 0)
        die();
    close(fd);
}

/* Bind sources and device nodes of a user-namespaced container: opened by
 * the launcher, still root in the host's user namespace, so a source behind
 * a directory only root may enter can be bound.  Opened through the init's
 * /proc/PID/root, they are the init's copies of the mounts (locked as the
 * kernel locks them for a less privileged namespace, so an ro or nosuid
 * host mount stays so); a socket pair made before the clone carries them
 * to the init in order. */
static int source_chan[2] = {-1, -1};

void do_fd_channel(char **a)
{
    (void)a;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, source_chan) < 0)
        die();
}

int send_source(pid_t pid, char **a)
{
    /* a: what, host path */
    struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    char root[64], data = 's', cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = &data, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf)};
    struct cmsghdr *cm;
    int dir, fd, rc;

    if (source_chan[0] < 0) {
        errno = EBADF;
        return -1;
    }
    snprintf(root, sizeof(root), "/proc/%d/root", pid);
    dir = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return -1;
    fd = (int)syscall(SYS_openat2, dir, a[1], &how, sizeof(how));
    close(dir);
    if (fd < 0)
        return -1;
    memset(cbuf, 0, sizeof(cbuf));
    cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    rc = sendmsg(source_chan[0], &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == 1 ? 0 : -1;
    close(fd);
    return rc;
}

void do_mount_source(char **a)
{
    /* a: what, in-root target, flags, resolve: bind the next source sent */
    char data, cbuf[CMSG_SPACE(sizeof(int))], src[64];
    char *args[8];
    struct iovec iov = {.iov_base = &data, .iov_len = 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf)};
    struct cmsghdr *cm;
    int fd = -1;

    if (source_chan[1] < 0)
        die_errno(EBADF);
    if (recvmsg(source_chan[1], &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) != 1)
        die();
    cm = CMSG_FIRSTHDR(&msg);
    if (!cm || cm->cmsg_type != SCM_RIGHTS || cm->cmsg_len != CMSG_LEN(sizeof(int)))
        die_errno(EBADMSG);
    memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
    args[0] = a[0];
    args[1] = src;
    args[2] = a[1];
    args[3] = "";
    args[4] = a[2];
    args[5] = "";
    args[6] = a[3];
    args[7] = NULL;
    do_mount(args);
    close(fd);
}
