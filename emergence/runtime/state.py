"""Container state on disk: <root>/<id>/{state.json, exec.fifo}.

The directory is the container's existence (made under a hidden name with its
state.json in it, then renamed into place: the atomic claim of an id); an flock
on it serialises commands on the same container.  The status
is derived, never stored stale: `creating` while create holds the claim (its
flock), `created` while the init waits on exec.fifo (still the shim, by
/proc/PID/exe), `running` after, `stopped` once the init (checked by pid and
start time, so a reused pid is not mistaken for it) is gone, or when a create
died before it finished (a claim nobody holds): `delete` removes such a one.

Everything here is root's alone: the root and each container's directory are
0700, its files 0600 (the init reaches exec.fifo through a descriptor, never by
path); a root that is a symlink or someone else's is refused.
"""

import errno
import os

from .. import fastjson
from ..errors import EmergenceError, NotFound, StateError

FIFO = "exec.fifo"
STATE = "state.json"
MAX_ID = 255  # one file name: the state directory, the cgroup
ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+-")


# A test seam (tests/security/test_crash.py): EMERGENCE_CRASHPOINT=VERB:STEP makes
# the process kill itself with SIGKILL right after that step, as a power cut or an
# OOM kill would.  Read once, when this module is imported: the cold path imports
# it per command; the node's planner imported it at warm-up from the node's own
# environment, so a caller's variable never reaches a warm worker.
CRASHPOINT = os.environ.get("EMERGENCE_CRASHPOINT")


def crashpoint(step):
    """Die here (SIGKILL) if the test seam names STEP; nothing otherwise."""
    if CRASHPOINT == step:
        os.kill(os.getpid(), 9)


def secure_root(root, create=False):
    """Make sure the state root is a directory of ours, 0700 (tightened if looser);
    refuse a symlink or a directory of another user (one could plant state there).
    CREATE: make it (and missing parents, 0755) if it is not there."""
    import stat
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        if not create:
            return
        parent = os.path.dirname(os.path.abspath(root))
        os.makedirs(parent, 0o755, exist_ok=True)
        try:
            os.mkdir(root, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise EmergenceError(f"state root {root} is a symlink or not a directory; refusing "
                             "it: give --root a real directory of root's")
    if st.st_uid != os.geteuid():
        raise EmergenceError(f"state root {root} belongs to uid {st.st_uid}, not to us "
                             f"(uid {os.geteuid()}); refusing it: remove it or give another "
                             "--root")
    if st.st_mode & 0o077:
        os.chmod(root, 0o700)  # made looser by someone (an old version made it 0711)


def at_barrier(pid):
    """True while PID still runs the shim (from its sealed memfd) blocked opening
    exec.fifo: `start` has not released it.  A released init still runs the shim
    for a moment (startContainer hooks, then exec) and is running by then: the
    kernel's wait channel tells the two apart.  Unknown (no /proc access, or a
    kernel that hides wait channels) counts as at the barrier."""
    try:
        if not os.readlink(f"/proc/{pid}/exe").startswith("/memfd:emergence-shim"):
            return False
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        return True
    return wchan in ("wait_for_partner", "0", "")


def valid_id(container_id):
    return (0 < len(container_id) <= MAX_ID and container_id[0].isalnum()
            and container_id.isascii() and ID_CHARS.issuperset(container_id))


def check_id(container_id):
    if not valid_id(container_id):
        shown = container_id if len(container_id) <= 64 else container_id[:64] + "..."
        raise EmergenceError(f"invalid container id {shown!r}: use up to {MAX_ID} letters, "
                             "digits and _ . + - (not starting with a symbol)")


def proc_start_time(pid):
    """Field 22 of /proc/PID/stat and the state letter, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return rest[0].decode(), int(rest[19])


def is_frozen(freezer_file):
    """True when the container's processes are frozen (v1 freezer.state or v2
    cgroup.freeze); here rather than in cgroups/freezer.py because `state` reads it."""
    try:
        with open(freezer_file) as f:
            return f.read().strip() in ("FROZEN", "1")
    except OSError:
        return False


def write_atomic(path, data, mode=0o600):
    """Replace PATH atomically: readers see the old or the new file, never half.

    No fsync: container state describes processes, which do not survive a
    reboot either, so durability across power loss would buy nothing."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class Container:
    """A container's state directory, locked while the object is in use."""

    def __init__(self, root, container_id):
        check_id(container_id)
        self.root = root
        self.id = container_id
        self.dir = os.path.join(root, container_id)
        self.fd = None
        self.data = {}
        self.corrupt = False
        self.locked = False

    # -- claiming and locking --
    @classmethod
    def claim(cls, root, container_id, data):
        """Create the state dir for a new container, with DATA as its state.json from
        the first moment it exists: it is made under a hidden name and renamed into
        place (a rename never replaces a directory with anything in it), so an id
        never names a directory without its state.  Fail if the id is taken."""
        c = cls(root, container_id)
        secure_root(root, create=True)
        tmp = claim_path(root, container_id)
        try:
            os.mkdir(tmp, 0o700)
        except FileExistsError:
            if not remove_stale_claim(tmp):
                raise EmergenceError(f"container {container_id!r} is being created; "
                                     "pick another id") from None
            os.mkdir(tmp, 0o700)
        try:
            c.fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            c.lock()
            c.data = data
            write_atomic(os.path.join(tmp, STATE), fastjson.dumps(data).encode())
            crashpoint("create:hidden")
            os.rename(tmp, c.dir)
        except BaseException as e:
            c.close()
            _remove_tree(tmp)
            if isinstance(e, OSError) and e.errno in (errno.ENOTEMPTY, errno.EEXIST,
                                                      errno.ENOTDIR):
                raise EmergenceError(f"container {container_id!r} already exists; "
                                     "pick another id or delete it first") from None
            raise
        return c

    @classmethod
    def open(cls, root, container_id, lock=True, tolerate_corrupt=False):
        c = cls(root, container_id)
        secure_root(root)
        try:
            c.fd = os.open(c.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"container {container_id!r} does not exist") from None
        if lock:
            c.lock()
        try:
            found = c.load()
        except EmergenceError:
            if not tolerate_corrupt:
                c.close()
                raise
            c.corrupt, found = True, True
        if not found:
            c.close()
            raise NotFound(f"container {container_id!r} does not exist")
        return c

    def lock(self):
        import fcntl  # here, not at the top: `state` and `list` never lock
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.locked = True

    def claimed(self):
        """True while another process holds this container's lock (a create at
        work, or another command); we never wait for it here."""
        if self.locked:
            return False
        import fcntl
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        return False

    def load(self):
        try:
            with open(os.path.join(self.dir, STATE), "rb") as f:
                self.data = fastjson.loads(f.read())
            return True
        except FileNotFoundError:
            if os.fstat(self.fd).st_nlink == 0:
                return False  # deleted while we waited for the lock
            # No state.json: not a container (the node's run dir sits in the default
            # root), unless it holds only a container's files, as a create of an
            # older version killed before its first state write left it.
            names = os.listdir(self.dir)
            if "config.json" in names and all(
                    n in ("config.json", FIFO) or n.startswith(STATE + ".tmp") for n in names):
                self.data = {"id": self.id, "status": "creating"}  # status(): stopped
                return True
            return False
        except ValueError:
            raise EmergenceError(f"state of container {self.id!r} is corrupt "
                                 f"({os.path.join(self.dir, STATE)}); "
                                 "remove it with `delete --force`") from None

    def save(self):
        write_atomic(os.path.join(self.dir, STATE), fastjson.dumps(self.data).encode())

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- status --
    @property
    def pid(self):
        return self.data.get("pid", 0)

    def init_alive(self):
        pid = self.pid
        if not pid:
            return False
        st = proc_start_time(pid)
        return st is not None and st[0] != "Z" and st[1] == self.data.get("startTime")

    def status(self):
        if self.data.get("status") == "creating":
            if self.claimed():
                return "creating"
            # Nobody holds the claim: the create finished just now (its last write
            # comes before it lets go), or it died; read again to tell which.
            if self.locked or not self.load() or self.data.get("status") == "creating":
                return "stopped"  # a create that died: `delete` removes what it made
        if not self.init_alive():
            return "stopped"
        # A `start` killed after it released the init leaves the fifo: the init's
        # executable says whether it is still waiting.
        if os.path.exists(os.path.join(self.dir, FIFO)) and at_barrier(self.pid):
            return "created"
        if self.data.get("freezer") and is_frozen(self.data["freezer"]):
            return "paused"  # not in the spec's list, but what runc says and engines read
        return "running"

    def require(self, allowed, why):
        """The status, if it is one of ALLOWED; else a StateError ending in WHY."""
        status = self.status()
        if status not in allowed:
            raise StateError(f"container {self.id!r} is {status}; {why}")
        return status

    def saved_config(self, raw=False):
        """The config.json the container was created with (kept in its state dir)."""
        try:
            with open(os.path.join(self.dir, "config.json"), "rb") as f:
                data = f.read()
            return data if raw else fastjson.loads(data)
        except (OSError, ValueError):
            raise EmergenceError(f"container {self.id!r} has no readable saved config; "
                                 "was it created by this version of emergence?") from None

    def saved_hooks(self):
        """config.hooks, parsing the saved config only when it has any (start and
        delete run on every container; almost none have hooks)."""
        try:
            data = self.saved_config(raw=True)
        except EmergenceError:
            return {}
        if b'"hooks"' not in data:
            return {}
        return fastjson.loads(data).get("hooks", {})

    def oci_state(self):
        """The state as runtime.md defines it (valid against state-schema.json)."""
        status = self.status()
        s = {
            "ociVersion": self.data.get("ociVersion", ""),
            "id": self.id,
            "status": status,
            "pid": self.pid if status in ("created", "running", "paused") else 0,
            "bundle": self.data.get("bundle", ""),
            "rootfs": self.data.get("rootfs", ""),
            "created": self.data.get("created", ""),
            "owner": "",
        }
        if self.data.get("annotations"):
            s["annotations"] = self.data["annotations"]
        return s

    def remove_dir(self):
        """The state goes last of all (and state.json last in it): until then a
        `delete` that died can be run again.  Files go by our descriptor of the
        directory: a create may take the name over as soon as it is empty."""
        for name in sorted(os.listdir(self.fd), key=lambda n: n == STATE):
            if name == STATE:
                crashpoint("delete:files")
            try:
                os.unlink(name, dir_fd=self.fd)
            except FileNotFoundError:
                pass
            except IsADirectoryError:  # notify/ (sdnotify.py): its socket, then itself
                _remove_subdir(self.fd, name)
        try:
            os.rmdir(self.dir)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTEMPTY):
                raise  # (not empty: a new container of this id has the name now)


def _remove_subdir(dir_fd, name):
    sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                  dir_fd=dir_fd)
    try:
        for inner in os.listdir(sub):
            os.unlink(inner, dir_fd=sub)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=dir_fd)


def claim_path(root, container_id):
    """Where a create makes a container's directory before it has a name."""
    return os.path.join(root, f".claim.{container_id}")


def _remove_tree(path):
    try:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)
    except FileNotFoundError:
        pass


def remove_stale_claim(path):
    """Remove the hidden claim a killed create left (nobody holds its lock); False
    while a create is at work on it."""
    import fcntl
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        _remove_tree(path)
        return True
    finally:
        os.close(fd)


def list_ids(root):
    try:
        return sorted(n for n in os.listdir(root) if valid_id(n))
    except FileNotFoundError:
        return []
