"""Fixtures of the attack tests: an unprivileged account made for the session
and removed after it, and a way to run a command as that account.

The attacks run as that user with `setpriv`, through `/usr/bin/python3` or a
static binary: the default python3 lives under /root, out of its reach.
"""

import os
import pwd
import subprocess
import uuid

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"


class User:
    def __init__(self, name):
        pw = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pw.pw_dir

    def argv(self, argv):
        """ARGV run as this user: its uid, its gid, no supplementary groups."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                "--reset-env", "--", *argv]

    def run(self, argv, timeout=30, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("cwd", "/")
        return subprocess.run(self.argv(argv), timeout=timeout, **kw)

    def python(self, code, timeout=30, **kw):
        """CODE run by the system's python3 as this user."""
        return self.run([SYSTEM_PYTHON, "-c", code], timeout=timeout, **kw)


@pytest.fixture(scope="session")
def other_user():
    """An unprivileged account that exists for this test session only."""
    if os.geteuid() != 0:
        pytest.skip("the attack tests make a user: needs root")
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} is missing (the attacker's interpreter)")
    name = f"emx{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", "--user-group", name],
                   check=True, capture_output=True)
    try:
        yield User(name)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        subprocess.run(["userdel", name], capture_output=True)
