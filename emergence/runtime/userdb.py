"""The container's own user database: HOME for the process user when the
config sets none, from the container's /etc/passwd, as runc does.

A rootfs may make /etc/passwd (or /etc) a symlink: Nix-built images point it
into /nix/store. Such links are followed as the container would see them, with
the rootfs as "/" (openat2 RESOLVE_IN_ROOT, or a component walk where the kernel
lacks it), so a rootfs cannot point us at the host's files.
"""

import errno
import os
import stat

_MAX_LINKS = 40  # the kernel's own limit for one lookup


def _openat2_in_root(root_fd, path, flags):
    """openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS); None if the kernel lacks it."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    class OpenHow(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                    ("resolve", ctypes.c_uint64)]

    how = OpenHow(flags, 0, 0x10 | 0x02)  # RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
    for _ in range(8):  # EAGAIN: a rename raced a ".." step; the kernel asks to retry
        fd = libc.syscall(437, root_fd, os.fsencode(path), ctypes.byref(how),
                          ctypes.sizeof(how))  # SYS_openat2: the same number on every arch
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            break
    if err in (errno.ENOSYS, errno.EPERM):  # old kernel, or a seccomp filter refusing it
        return None
    raise OSError(err, os.strerror(err), path)


def _walk_in_root(root_fd, path, flags):
    """Resolve PATH one component at a time, symlinks read as the container
    sees them: absolute targets restart at the rootfs, ".." stops there."""
    todo = [c for c in path.split("/") if c]
    stack = []  # fds of the directories walked, root excluded
    links = 0
    try:
        while todo:
            name = todo.pop(0)
            cur = stack[-1] if stack else root_fd
            if name == ".":
                continue
            if name == "..":
                if stack:
                    os.close(stack.pop())
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur)
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                os.close(fd)
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(name, dir_fd=cur)
                if target.startswith("/"):
                    while stack:
                        os.close(stack.pop())
                todo[:0] = [c for c in target.split("/") if c]
                continue
            if todo:
                if not stat.S_ISDIR(st.st_mode):
                    os.close(fd)
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
                stack.append(fd)
                continue
            os.close(fd)
            return os.open(name, flags | os.O_NOFOLLOW, dir_fd=cur)
        raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    finally:
        for fd in stack:
            os.close(fd)


def open_in_root(root, path, flags=os.O_RDONLY):
    """Open PATH as a process chrooted at ROOT would, without leaving ROOT."""
    flags |= os.O_CLOEXEC | os.O_NONBLOCK
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _openat2_in_root(root_fd, path, flags)
        return fd if fd is not None else _walk_in_root(root_fd, path, flags)
    finally:
        os.close(root_fd)


def _read_passwd(root):
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:  # the usual case, real etc/ and passwd: no symlink to interpret
            etc = os.open("etc", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=root_fd)
            try:
                fd = os.open("passwd", flags, dir_fd=etc)
            finally:
                os.close(etc)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            fd = open_in_root(root, "/etc/passwd")  # a symlink on the way
    finally:
        os.close(root_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return b""
        return f.read(1 << 20)


def home_of(root, uid):
    """The home directory of UID in ROOT/etc/passwd, or "/" when unknown."""
    try:
        data = _read_passwd(root)
    except OSError:
        return "/"
    for line in data.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and fields[2].strip() == str(uid) and fields[5]:
            return fields[5]
    return "/"


def set_home(process, root):
    """Add HOME=... to PROCESS's env unless it has one."""
    env = process.setdefault("env", [])
    if not any(e.startswith("HOME=") for e in env):
        env.append("HOME=" + home_of(root, process.get("user", {}).get("uid", 0)))
