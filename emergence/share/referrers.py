"""The referrers of a manifest (signatures, SBOMs, attestations: manifests
whose `subject` names it), per repository: GET /v2/<name>/referrers/<digest>
answers an image index of their descriptors, filtered by `artifactType` on
request.  The same index is kept under the spec's referrers tag
(`sha256-<hex>`) for clients that read only that, rewritten whenever a
manifest with a subject comes or goes; a tag index a client pushed itself
(before this node had the API) counts too: what it lists stays a referrer
until deleted by digest."""

import re

from aiohttp import web

from .registry import API_HEADER, INDEX


def tag_for(digest):
    """The spec's referrers tag of DIGEST: algorithm (32 characters at most),
    '-', encoded part (64 at most), other characters made '-'."""
    algo, _, encoded = digest.partition(":")
    return re.sub(r"[^a-zA-Z0-9._-]", "-", f"{algo[:32]}-{encoded[:64]}")


def listing(infos, records, subject, exclude=()):
    """[descriptor] of the manifests among RECORDS (and the indexes they list)
    whose subject is SUBJECT, leaving out EXCLUDE (just deleted)."""
    out = []
    for digest, media in infos.members(records).items():
        if digest in exclude:
            continue
        info = infos.get(digest, media)
        if info is not None and info.subject == subject:
            out.append(info.descriptor(digest))
    return out


def index(descriptors):
    return {"schemaVersion": 2, "mediaType": INDEX, "manifests": descriptors}


async def get(registry, request):
    """GET /v2/<name>/referrers/<digest>[?artifactType=]: 200 always (an empty
    index for a digest nothing refers to, or an unknown repository), 400 for a
    digest that is not one; in pages of at most [share] max_manifest bytes,
    each with a Link to the next (`last`: the digest the page ended with)."""
    import json

    from .registry import ANY_DIGEST_RE, echo, error
    name = registry._name(request)
    digest = request.match_info["digest"]
    if not ANY_DIGEST_RE.match(digest):
        raise error(400, "DIGEST_INVALID", f"{echo(digest)} is not a sha256 or sha512 digest")
    records = registry.records(name)
    found = listing(registry.infos, records, digest)
    headers = {**API_HEADER}
    wanted = request.query.getall("artifactType", [])
    if wanted:
        found = [d for d in found if d.get("artifactType") in wanted]
        headers["OCI-Filters-Applied"] = "artifactType"
    body, rest = page(found, request.query.get("last"), registry.max_manifest)
    if rest:  # the spec: a Link to the next page when one index cannot hold them all
        from urllib.parse import urlencode
        query = urlencode([("last", body["manifests"][-1]["digest"])]
                          + [("artifactType", w) for w in wanted])
        headers["Link"] = f'<{request.path}?{query}>; rel="next"'
    return web.Response(body=json.dumps(body).encode(), headers=headers,
                        content_type=INDEX)


def page(descriptors, last, limit):
    """(the index of DESCRIPTORS after digest LAST, in digest order, as many as
    fit in LIMIT bytes of JSON (one at least), whether more follow)."""
    import json
    found = sorted(descriptors, key=lambda d: d["digest"])
    if last:
        found = [d for d in found if d["digest"] > last]
    size = len(json.dumps(index([])))
    for n, d in enumerate(found):
        size += len(json.dumps(d)) + 2
        if size > limit and n:
            return index(found[:n]), True
    return index(found), False


def refresh(registry, name, subjects, exclude=()):
    """Rewrite NAME's referrers tag of each of SUBJECTS from what refers to it
    now (dropped when nothing does)."""
    from ..image.store import canonical
    store = registry.store
    for subject in subjects:
        ref = f"{name}:{tag_for(subject)}"
        found = listing(registry.infos, registry.records(name), subject, exclude)
        current = dict(registry.records(name)).get(ref)
        if not found:
            if current is not None:
                store.remove_refs([ref])
            continue
        import hashlib
        data = canonical(index(found))
        if current is not None and current.get("digest") == \
                "sha256:" + hashlib.sha256(data).hexdigest():
            continue
        digest, size = store.put(data)
        store.set_ref(ref, {"mediaType": INDEX, "digest": digest, "size": size})
