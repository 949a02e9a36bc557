"""Emergence: a low-level OCI container runtime with a small C shim."""

__version__ = "0.1.0"
OCI_VERSION = "1.0.2"
