"""Referrers in pages: a list that one index of [share] max_manifest bytes
cannot hold comes in pages, each with a Link to the next (the spec's MUST),
the artifactType filter kept from page to page."""

import json

import requests
from distlib import SBOM, SIG, Client, digest_of, referrer
from sharelib import nodes  # noqa: F401


def test_referrers_come_in_pages(nodes):  # noqa: F811
    reg = Client(nodes(config={"max_manifest": 1024}))
    subject = reg.image("app", "v1", b"s")
    made = {SBOM: set(), SIG: set()}
    for i in range(14):
        kind = SBOM if i % 2 else SIG
        made[kind].add(referrer(reg, "app", subject, kind, b"art%d" % i,
                                annotations={"n": str(i)})["digest"])
    for query, want in (("", made[SBOM] | made[SIG]), (f"?artifactType={SBOM}", made[SBOM])):
        url, seen, pages = f"{reg.url}/v2/app/referrers/{subject['digest']}{query}", [], 0
        while url:
            r = requests.get(url)
            assert r.status_code == 200 and len(r.content) <= 1024
            assert ("OCI-Filters-Applied" in r.headers) == bool(query)
            seen += [d["digest"] for d in r.json()["manifests"]]
            link = r.headers.get("Link")
            url = None
            if link:
                assert link.endswith('>; rel="next"') and link.startswith("</v2/app/referrers/")
                url = reg.url + link[1:link.index(">")]
            pages += 1
        assert pages > 1 and len(seen) == len(set(seen)) and set(seen) == want
    # a list that fits: one page, no Link
    other = reg.image("app", "v2", b"t")
    one = referrer(reg, "app", other, SBOM, b"only")
    r = requests.get(f"{reg.url}/v2/app/referrers/{other['digest']}")
    assert "Link" not in r.headers and [d["digest"] for d in r.json()["manifests"]] == [
        one["digest"]]
    assert json.loads(requests.get(
        f"{reg.url}/v2/app/referrers/{digest_of(b'none')}").content)["manifests"] == []
