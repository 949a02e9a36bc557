"""Which peer says what a tag means.  A digest proves itself; a tag does not.
A node that holds NAME:TAG signs the statement "NAME:TAG is DIGEST" with its
node key (GET /share/v1/tag?name=&tag=).  A pull by tag with trusted keys
takes a peer's manifest only if that peer hands over a statement signed by
a trusted key and the manifest hashes to the digest the statement names; a
peer that serves another manifest is banned for the pull, and trusted
statements that disagree stop it (pull by digest then).  Without trusted
keys, a tag means what the first peer that has it says (as before)."""

import asyncio


def message(name, tag, digest):
    return f"emergence-tag-1;{name};{tag};{digest}"


def statement(key, name, tag, digest):
    return {"name": name, "tag": tag, "digest": digest,
            "sig": key.sign(message(name, tag, digest))}


def check(stmt, name, tag, trusted_keys):
    """The digest STMT vouches for NAME:TAG with, if a trusted key signed it; else None."""
    from .registry import DIGEST_RE
    from .signing import verify
    try:
        ok = (stmt["name"] == name and stmt["tag"] == tag
              and isinstance(stmt["digest"], str) and DIGEST_RE.match(stmt["digest"])
              and verify(trusted_keys, message(name, tag, stmt["digest"]), stmt["sig"]))
    except (KeyError, TypeError):
        return None
    return stmt["digest"] if ok else None


async def vouched(session, peers, name, tag, trusted_keys, timeout=10.0):
    """({peer: digest} for the PEERS with a trusted statement, {peer: why not})."""
    import aiohttp

    async def ask(peer):
        try:
            async with session.get(peer + "/share/v1/tag", params={"name": name, "tag": tag},
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                if r.status != 200:
                    return peer, None, f"no signed statement for {name}:{tag} ({r.status})"
                digest = check(await r.json(), name, tag, trusted_keys)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            return peer, None, f"tag statement failed: {type(e).__name__}"
        if digest is None:
            return peer, None, f"its statement for {name}:{tag} is not signed by a trusted key"
        return peer, digest, None
    good, bad = {}, {}
    for peer, digest, why in await asyncio.gather(*(ask(p) for p in peers)):
        if digest:
            good[peer] = digest
        else:
            bad[peer] = why
    return good, bad


async def agreed(session, sources, name, tag, trusted_keys, banned, final):
    """(the SOURCES that vouch for NAME:TAG, the digest they vouch for).  The
    others go into BANNED with the reason; statements that disagree, or (if
    FINAL: no upstream to ask) none at all, are an error."""
    from ..errors import EmergenceError
    good, bad = await vouched(session, sources, name, tag, trusted_keys)
    banned.update(bad)
    digests = sorted(set(good.values()))
    if len(digests) > 1:
        says = "; ".join(f"{p} says {d}" for p, d in good.items())
        raise EmergenceError(f"trusted peers disagree on what {name}:{tag} is ({says}); "
                             "pull it by digest (NAME@sha256:...)")
    if not digests and final:
        why = "; ".join(f"{p}: {w}" for p, w in bad.items())
        raise EmergenceError(f"no peer vouches for {name}:{tag} with a trusted key ({why}); "
                             "add its node key (NAME:BASE64, the public_key of its "
                             "/share/v1/info) to "
                             "[share] trusted_keys or --trusted-key, or pull by digest")
    return [p for p in sources if p in good], (digests[0] if digests else None)
