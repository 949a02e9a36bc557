"""What share's peers prove: an announcement ("the node at URL now holds
these refs and digests") is signed by the sending node's key and taken only
if that key is in `[share] trusted_keys` (or the sender holds the node
token).  The token itself, and who may read or write at all, are the node's
(`emergence/access.py`); share's old `push.token` became the node token.
"""

import json
import time

MAX_SKEW = 300  # seconds an announcement stays good: a replay later is refused
LEGACY_TOKEN_FILE = "push.token"  # share's token before the node had one


def announce_message(node, keys, when):
    return "emergence-announce-1;" + json.dumps({"node": node, "keys": keys, "time": when},
                                                 sort_keys=True, separators=(",", ":"))


def sign_announce(key, node, keys, when=None):
    """The body of an announcement from NODE (its URL) of KEYS, signed by KEY."""
    when = int(time.time()) if when is None else when
    return {"node": node, "keys": keys, "time": when,
            "sig": key.sign(announce_message(node, keys, when))}


def announce_refused(body, trusted_keys, now=None):
    """None if BODY's signature is by a trusted key and fresh; else (HTTP
    status, why not): 401 without a signature, 403 with one not good here."""
    from .signing import verify
    sig, when = body.get("sig"), body.get("time")
    if not isinstance(sig, str) or isinstance(when, bool) or not isinstance(when, int):
        return 401, "an announcement needs its sender's signature (sig, time) or the node token"
    if not trusted_keys:
        return 403, "no [share] trusted_keys: signed announcements are not taken"
    now = time.time() if now is None else now
    if abs(now - when) > MAX_SKEW:
        return 403, (f"the announcement is {int(abs(now - when))} s old or ahead "
                     f"(at most {MAX_SKEW})")
    if not verify(trusted_keys, announce_message(body["node"], body["keys"], when), sig):
        return 403, "the announcement is not signed by a key in [share] trusted_keys"
    return None
