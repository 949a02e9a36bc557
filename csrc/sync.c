/* Talking to the runtime across the create/start split: readiness, the
 * start barrier, sync points for hooks, and the hooks the init runs. */

#include "shim.h"

void do_ready(void)
{
    say("ready");
    close(status_fd);
    status_fd = -1;
}

/* The start barrier: opening the fifo for writing blocks until `start`
 * opens it for reading.  The state dir is reached through an fd opened
 * before pivot_root, so no /proc is needed inside the container. */
void do_barrier(char **a)
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

void do_started(void)
{
    if (fifo_fd < 0)
        return;
    if (write(fifo_fd, "0", 1) != 1)
        _exit(127);
    close(fifo_fd);
    fifo_fd = -1;
}

void do_sync(char **a)
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
void do_hook(char **a)
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
