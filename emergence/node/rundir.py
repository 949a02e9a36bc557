"""The node's run dir (pid file, control and planner sockets) is the node's
own, or the node does not use it.

Whoever can write that directory can plant a planner socket (and have root
run the SPAWN plans they send back), a control socket, or a pid file that
`node stop` would signal.  So a run dir owned by another user, writable by
group or others, or a symlink is refused with one line, never chmod'ed into
shape; and so is one inside a directory another user could rename it out of.
"""

import os
import stat

from ..errors import EmergenceError


def _who(uids):
    return " or ".join("root" if u == 0 else f"uid {u}" for u in dict.fromkeys(uids))


def check(path, owners=None, create=False):
    """Refuse (EmergenceError, one line) the run dir PATH unless it is a real
    directory owned by one of OWNERS (default: this process's uid) that only
    its owner may write, in directories only root or OWNERS may change.
    CREATE makes it (0700) when missing; a run dir of ours that others may
    read is narrowed to 0700.  Returns False when it does not exist (and
    CREATE is not given), else True."""
    me = os.geteuid()
    owners = tuple(owners or (me,))
    path = os.path.abspath(path)
    label = f"the node's run dir {path}"
    # Every directory above: root's or ours, and not writable by others unless
    # sticky (as /tmp): else its owner could move ours away and put theirs.
    up = os.path.dirname(path)
    while True:
        try:
            st = os.stat(up)
        except FileNotFoundError:
            st = None  # made below (ours) when CREATE
        if st is not None:
            if st.st_uid not in (0, *owners):
                raise EmergenceError(f"{label} is inside {up}, which uid {st.st_uid} owns; "
                                     "choose a run dir under directories of root's")
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
                raise EmergenceError(
                    f"{label} is inside {up}, which others may write (mode "
                    f"{stat.S_IMODE(st.st_mode):04o}); choose a run dir under directories "
                    "only root may change")
        if up == os.path.dirname(up):
            break
        up = os.path.dirname(up)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            return False
        os.makedirs(path, mode=0o700)
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise EmergenceError(f"{label} is a symlink; give the directory itself")
    if not stat.S_ISDIR(st.st_mode):
        raise EmergenceError(f"{label} is not a directory")
    if st.st_uid not in owners:
        raise EmergenceError(f"{label} is owned by uid {st.st_uid}, not {_who(owners)}; "
                             "remove it, or choose another with --node-run-dir")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EmergenceError(f"{label} is writable by group or others (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); remove it, or make it 0700")
    if create and stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)  # ours, and nobody else could write it: only narrowed
    return True
