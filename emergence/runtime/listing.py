"""`list`: the containers under --root."""

from .. import fastjson
from ..errors import NotFound
from .state import Container, list_ids


def list_containers(root, fmt="table", quiet=False):
    states = []
    for cid in list_ids(root):
        try:
            with Container.open(root, cid, lock=False) as c:
                states.append(c.oci_state())
        except NotFound:
            continue  # deleted while we looked
    if quiet:
        return "".join(s["id"] + "\n" for s in states)
    if fmt == "json":
        return fastjson.dumps(states) + "\n"
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], "root")
             for s in states]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n"
                   for r in rows)
