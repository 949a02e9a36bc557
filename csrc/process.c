/* The process: rlimits, user and groups, capabilities, scheduling, the
 * executable and cwd lookups, the console, and the final execve. */

#include "shim.h"

void do_rlimit(char **a)
{
    /* a: what, resource, soft, hard */
    struct rlimit rl = {.rlim_cur = num(a[2]), .rlim_max = num(a[3])};
    if (setrlimit((int)num(a[1]), &rl) < 0)
        die();
}

void do_user(char **a)
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

void do_caps_bounding(char **a)
{
    /* a: what, bounding set to keep (u64 mask) */
    uint64_t keep = num(a[1]);
    int last = last_cap();
    for (int c = 0; c <= last; c++)
        if (!(keep & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0 && errno != EINVAL)
            die();
}

void do_caps(char **a)
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

void do_link_up(char **a)
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

void do_sched(char **a)
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

void do_ioprio(char **a)
{
    if (syscall(SYS_ioprio_set, (int)num(a[1]), (int)num(a[2]), (int)num(a[3])) < 0)
        die();
}

void do_mempolicy(char **a, uint32_t nargs)
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
void do_resolve_exec(char **a)
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
void do_console(char **a)
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

void do_exec(char **a, uint32_t nargs)
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

/* As runc and crun, a process that will not be root gets its stdio (a pipe,
 * a socket or a file the engine opened as root) before the switch, so it can
 * reopen /proc/self/fd/N.  A device is left alone (the host's /dev/null, a
 * terminal), and so is what the user namespace cannot give away. */
void do_chown_stdio(char **a)
{
    /* a: what, uid, gid */
    uid_t uid = (uid_t)num(a[1]);
    gid_t gid = (gid_t)num(a[2]);
    struct stat st;

    for (int fd = 0; fd < 3; fd++) {
        if (fstat(fd, &st) < 0 || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
            continue;
        if (st.st_uid == uid && st.st_gid == gid)
            continue;
        if (fchown(fd, uid, gid) < 0 && errno != EINVAL && errno != EPERM && errno != EROFS)
            die();
    }
}
