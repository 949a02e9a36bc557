"""Emergence: a low-level OCI container runtime with a small C shim."""

__version__ = "0.1.0"
OCI_VERSION = "1.0.2"
DEFAULT_ROOT = "/run/emergence"  # container state (a tmpfs: it does not outlive a boot)


def default_store():
    """The image store: $EMERGENCE_STORE or /var/lib/emergence."""
    import os
    return os.environ.get("EMERGENCE_STORE", "/var/lib/emergence")
