"""Emergence: a low-level OCI container runtime with a small C shim."""

__version__ = "0.1.0"
OCI_VERSION = "1.0.2"
DEFAULT_ROOT = "/run/emergence"  # container state (a tmpfs: it does not outlive a boot)


def default_root():
    """The container state root: /run/emergence for root; for anyone else their own,
    $XDG_RUNTIME_DIR/emergence (as runc and crun do), never a root shared with root."""
    import os
    uid = os.geteuid()
    if uid == 0:
        return DEFAULT_ROOT
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}", "emergence")


def default_store():
    """The image store: $EMERGENCE_STORE or /var/lib/emergence."""
    import os
    return os.environ.get("EMERGENCE_STORE", "/var/lib/emergence")
