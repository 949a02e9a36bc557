/* Loading the seccomp filter that Python compiled to BPF. */

#include "shim.h"

void do_seccomp(char **a, uint32_t nargs)
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
