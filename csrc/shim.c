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
 *     "pid N"            host pid of the init (sent by the launcher once cloned)
 *     "ready"            init reached the start barrier
 *     "error ERRNO TEXT" an operation failed; TEXT names it
 */
#include "shim.h"

static struct op *ops;
static size_t nops;
int status_fd = -1;
const char *current_what = "shim";

/* State carried between operations inside the init. */
int root_fd = -1;     /* the container rootfs, before pivot */
int state_fd = -1;    /* O_PATH fd of the state dir (barrier fifo) */
int cwd_fd = -1;      /* resolved process.cwd */
int fifo_fd = -1;     /* the start barrier, open while start hooks run */
char exec_path[PATH_MAX];

void say(const char *fmt, ...)
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

void die_errno(int err)
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

void die(void)
{
    die_errno(errno);
}

unsigned long long num(const char *s)
{
    return strtoull(s, NULL, 0);
}

static int ns_fds[NS_SLOTS] = {-1, -1, -1, -1, -1, -1, -1, -1};

/* Joining a namespace by an fd opened earlier: after joining the mount
 * namespace, /proc/<pid>/ns of the target may no longer resolve. */
int ns_slot(const char *s)
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

/* ---- operations ------------------------------------------------------ */

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
    case OP_FD_CHANNEL:
        do_fd_channel(a);
        break;
    case OP_MOUNT_SOURCE:
        do_mount_source(a);
        break;
    case OP_CHOWN_STDIO:
        do_chown_stdio(a);
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
        case OP_FD_CHANNEL:
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
    /* Its pid first: a caller that gives up at the GATE can still reap it. */
    say("pid %d", pid);
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
        case OP_GATE: {
            /* The caller's go-ahead (its cgroups made meanwhile): one byte;
             * EOF means it gave up, and the init goes with us. */
            ssize_t r;
            do
                r = read((int)num(a[1]), &c, 1);
            while (r < 0 && errno == EINTR);
            close((int)num(a[1]));
            if (r != 1) {
                int err = r < 0 ? errno : ECANCELED;
                kill(pid, SIGKILL);
                die_errno(err);
            }
            break;
        }
        case OP_SEND_SOURCE:
            if (send_source(pid, a) < 0) {
                int err = errno;
                kill(pid, SIGKILL);
                die_errno(err);
            }
            break;
        default:
            kill(pid, SIGKILL);
            die_errno(EINVAL);
        }
    }
    if (write(go[1], "g", 1) != 1) {
        int err = errno;
        kill(pid, SIGKILL);
        die_errno(err);
    }
    return 0;
}
