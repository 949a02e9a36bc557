"""cffi build script for emergence.runtime._native: libseccomp, used to compile a
seccomp profile to BPF in the runtime (outside the container); the shim
only loads the resulting program."""

from cffi import FFI

ffi = FFI()
ffi.cdef("""
typedef void *scmp_filter_ctx;
struct scmp_arg_cmp {
    unsigned int arg;
    int op;
    uint64_t datum_a;
    uint64_t datum_b;
};
scmp_filter_ctx seccomp_init(uint32_t def_action);
void seccomp_release(scmp_filter_ctx ctx);
uint32_t seccomp_arch_resolve_name(const char *arch_name);
uint32_t seccomp_arch_native(void);
int seccomp_arch_add(scmp_filter_ctx ctx, uint32_t arch_token);
int seccomp_attr_set(scmp_filter_ctx ctx, int attr, uint32_t value);
int seccomp_syscall_resolve_name(const char *name);
int seccomp_rule_add_array(scmp_filter_ctx ctx, uint32_t action, int syscall,
                           unsigned int arg_cnt, const struct scmp_arg_cmp *arg_array);
int seccomp_export_bpf(const scmp_filter_ctx ctx, int fd);
""")
ffi.set_source("emergence.runtime._native", "#include <seccomp.h>", libraries=["seccomp"])

if __name__ == "__main__":
    ffi.compile(verbose=True)
