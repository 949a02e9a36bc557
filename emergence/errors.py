"""Errors meant for people: each carries one line naming the problem and the fix."""


import os

DEBUG = False  # set by the command line's --debug


def warn(msg):
    """A warning on stderr: the operation goes on."""
    os.write(2, f"emergence: warning: {msg}\n".encode())


def debug_note(msg):
    """A warning shown only with --debug: something runc also passes over quietly."""
    if DEBUG:
        warn(msg)


class EmergenceError(Exception):
    """A failure reported as one line and a non-zero exit, never a traceback."""

    exit_code = 1


class ConfigError(EmergenceError):
    """The bundle or its config.json is wrong; nothing was touched."""


class NotFound(EmergenceError):
    """The named container does not exist."""


class StateError(EmergenceError):
    """The container is not in a state that allows the operation."""
