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


SHOWN = 200  # at most this many characters of a value in an error line


def shown(value, limit=SHOWN):
    """VALUE quoted for an error line, cut to about LIMIT characters: an error
    names the value, it does not echo a 100k-character one whole."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def cut(text, limit=SHOWN):
    """TEXT unquoted, on one line (line breaks escaped), cut to LIMIT characters
    and how long it was."""
    if "\n" in text or "\r" in text:
        text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def one_line(message, limit=600):
    """MESSAGE as the one line it must be on stderr: line breaks that came in
    with a value are escaped, and an overlong line keeps its head and tail
    (the fix is usually at the end)."""
    if "\n" in message or "\r" in message:
        message = message.replace("\r", "\\r").replace("\n", "\\n")
    if len(message) > limit:
        half = limit // 2
        message = f"{message[:half]} [...{len(message) - 2 * half} characters...] " \
                  f"{message[-half:]}"
    return message
