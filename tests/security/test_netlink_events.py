"""The rtnetlink events Relay's reconciler and cluster agents read (links,
addresses, routes, neighbours, FDB entries) come from the kernel: another
user cannot forge one by sending to the multicast groups they listen on (the
kernel lets non-root processes receive there, never send).  The events are
hints either way: each marks keys for a compare with the kernel's state."""

import pytest

FORGE = r"""
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0))
# RTM_DELLINK (17) for ifindex 1, to the RTMGRP_LINK (1) and RTMGRP_NEIGH (4) groups
msg = struct.pack("=LHHLL", 16 + 16, 17, 0, 1, 0) + struct.pack("=BxHiII", 0, 0, 1, 0, 0)
try:
    s.sendto(msg, (0, 1 | 4))
    print("sent")
except PermissionError:
    print("EPERM")
"""


def test_another_user_cannot_send_rtnetlink_events(other_user):
    p = other_user.python(FORGE)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "EPERM"


def test_root_can_listen_to_the_same_groups():
    import os
    import socket
    if os.geteuid() != 0:
        pytest.skip("needs root")
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        s.bind((0, 1 | 4))  # what relay's listeners bind (kernel.Events, agent.py)
    finally:
        s.close()
