/* Loading the seccomp filter that Python compiled to BPF. */

#include "shim.h"

/* Seccomp notify: the listener fd the kernel gave the init goes back to the
 * runtime through a socket (SCM_RIGHTS), which sends it on to listenerPath
 * with the container's state; the init keeps no copy. */
static void send_listener(int sock, int listener)
{
    char byte = 'L';
    char ctl[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {0};
    struct cmsghdr *c;

    memset(ctl, 0, sizeof(ctl));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof(ctl);
    c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &listener, sizeof(int));
    while (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
        if (errno != EINTR)
            die();
    close(listener);
    close(sock);
}

void do_seccomp(char **a, uint32_t nargs)
{
    /* a: what, flags, bpf program bytes (hex)[, socket for the listener fd:
     * flags then hold SECCOMP_FILTER_FLAG_NEW_LISTENER] */
    int rc;
    size_t hexlen = strlen(a[2]), n = hexlen / 2;
    unsigned char *code = malloc(n ? n : 1);
    struct sock_fprog prog;
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
    rc = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, (unsigned int)num(a[1]), &prog);
    if (rc < 0)
        die();
    if (nargs > 3)
        send_listener((int)num(a[3]), rc);
}
