"""The attacker of these tests is really someone else: not root, no groups."""


def test_other_user_is_unprivileged(other_user):
    p = other_user.python("import os; print(os.getuid(), os.geteuid(), os.getgroups())")
    assert p.returncode == 0, p.stderr
    uid, euid, groups = p.stdout.split(maxsplit=2)
    assert int(uid) == int(euid) == other_user.uid != 0
    assert groups.strip() == "[]"
