"""/metrics text rendered once per sample, ahead of a scraper's expected scrape:
the rendering cache's rules (with explicit clocks), then a real service scraped
over HTTP at a steady rhythm."""

import asyncio
import time

from conftest import serving
from prometheus_client.parser import text_string_to_metric_families

from emergence.overwatch.exporter import Rendered


def counting():
    made = []
    return made, Rendered(lambda: made.append(1) or f"body{len(made)}".encode())


def scrape(r, key, peer, now):
    r.note(peer, now)
    return r.scrape(key)


def test_first_scrape_renders_and_repeats_read_the_cache():
    made, r = counting()
    assert r.fresh(1) is None
    assert scrape(r, 1, "a", 0.0) == b"body1"
    assert scrape(r, 1, "b", 0.1) == b"body1" and len(made) == 1
    assert scrape(r, 2, "c", 0.2) == b"body2"  # a new sample: rendered again
    r.publish(3, 1.0, now=0.3)  # nobody due: not rendered, the old text is not served
    assert r.fresh(3) is None and r.fresh(2) is None
    assert scrape(r, 3, "d", 0.4) == b"body3"
    r.publish(2, 1.0, now=0.5)  # an older sample never replaces a newer text
    assert r.fresh(3) == b"body3"


def test_pass_before_an_expected_scrape_renders_ahead():
    made, r = counting()
    scrape(r, 1, "prom", 0.0)
    scrape(r, 5, "prom", 5.0)  # every 5 s
    r.publish(6, 1.0, now=6.0)  # next scrape expected at 10: not yet
    r.publish(9, 1.0, now=9.3)  # due before the next pass
    assert len(made) == 3 and r.ahead == 1
    assert r.fresh(9) == b"body3" and scrape(r, 9, "prom", 10.0) == b"body3"
    assert len(made) == 3


def test_no_scraper_no_render_and_a_silent_one_is_forgotten():
    made, r = counting()
    for i in range(20):
        r.publish(i, 1.0, now=float(i))
    assert made == []
    scrape(r, 21, "p", 20.0)
    scrape(r, 22, "p", 22.0)
    r.publish(50, 1.0, now=50.0)
    assert "p" not in r.scrapers and len(made) == 2


def test_scrapes_read_the_latest_pass_rendered_ahead(rt, running, tmp_path):
    from emergence.overwatch.service import Service
    cid = running()

    async def main():
        import aiohttp
        svc = Service({"root": rt.root, "interval": 0.2}, str(tmp_path), lambda m: None)
        seen = []
        async with serving(svc) as port:
            async with aiohttp.ClientSession() as s:
                for _ in range(5):
                    await asyncio.sleep(0.9)
                    sent = time.time()
                    async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
                        seen.append((sent, await r.text()))
            return seen, svc.passes, svc.rendered

    seen, passes, rendered = asyncio.run(main())
    for sent, text in seen:
        last = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "container_last_seen" and s.labels["name"] == cid]
        assert len(last) == 1 and 0 <= sent - last[0] < 0.6, (sent, last)  # the latest pass
    # rendered about once per scrape (twice where a scrape falls where two passes'
    # windows overlap), not once per pass; from the third scrape on, ahead of it
    assert passes >= 15 and rendered.renders <= 2 * len(seen)
    assert rendered.ahead >= 2, (rendered.renders, rendered.ahead)
