"""The container's own user database: HOME for the process user when the
config sets none, from the container's /etc/passwd, as runc does.

The file is read through the container's root without following symlinks
(etc/ and passwd must be real), so a rootfs cannot point us at the host's.
"""

import os
import stat


def home_of(root, uid):
    """The home directory of UID in ROOT/etc/passwd, or "/" when unknown."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            etc = os.open("etc", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=root_fd)
            try:
                fd = os.open("passwd", flags | os.O_NONBLOCK, dir_fd=etc)
            finally:
                os.close(etc)
        finally:
            os.close(root_fd)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return "/"
            data = f.read(1 << 20)
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
