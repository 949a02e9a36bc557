"""The kube-scheduler extender routes with real-shaped JSON (ExtenderArgs as
kube-scheduler sends it: a v1.Pod and a v1.NodeList, or NodeNames) against a
real etcd: the filter drops nodes the pod does not fit and names why, the
prioritize scores are 0..10 with the D_max choice on top; malformed
quantities are a 400 in one line, and the routes need a credential."""

import asyncio

import aiohttp

from emergence.place import tasks
from emergence.place.service import Service

from .test_service import AUTH, _host, serving


def _pod(cpu="500m", memory="128Mi", image="docker.io/library/busybox:1.36"):
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "web-7d9f", "namespace": "default",
                         "uid": "5b1f6f9e-0d7c-4a51-9d53-6f2b1c3a0e11",
                         "labels": {"app": "web"}},
            "spec": {"schedulerName": "default-scheduler",
                     "containers": [{"name": "web", "image": image,
                                     "resources": {"requests": {"cpu": cpu,
                                                                "memory": memory},
                                                   "limits": {"cpu": "1"}}},
                                    {"name": "side", "image": "busybox",
                                     "resources": {}}],
                     "initContainers": [{"name": "init", "image": "busybox",
                                         "resources": {"requests": {"cpu": "250m"}}}]},
            "status": {"phase": "Pending"}}


def _node(name):
    return {"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}


def _call(cluster, calls):
    async def main():
        svc = Service({"etcd": cluster.endpoint, "prefix": cluster.prefix,
                       "cluster_dir": cluster.material.dir}, "/nonexistent", lambda m: None)
        out = []
        async with serving(svc) as port:
            async with aiohttp.ClientSession() as s:
                for verb, body, headers in calls:
                    kw = {"data": body} if isinstance(body, str) else {"json": body}
                    async with s.post(f"http://127.0.0.1:{port}/place/extender/{verb}",
                                      headers=AUTH if headers is None else headers,
                                      **kw) as r:
                        out.append((r.status, await r.json()))
        return out
    return asyncio.run(main())


def test_filter_and_prioritize_with_kubernetes_json(cluster):
    _host(cluster, "busy", 0.9)
    _host(cluster, "idle", 0.1)
    _host(cluster, "mid", 0.5)
    # "full" has 4 CPUs, all held by a task the leader placed there
    _host(cluster, "full", 0.1)
    tasks.submit(cluster, {"kind": "sleep", "id": "held", "seconds": 60,
                           "demand": {"cpu": 4}})
    cluster.put({"state": "assigned", "host": "full", "attempt": 1, "dispatched": 1e12,
                 "history": []}, "status", "held")
    names = ["busy", "idle", "mid", "full", "k8s-only"]
    nodelist = {"kind": "NodeList", "apiVersion": "v1", "metadata": {},
                "items": [_node(n) for n in names]}
    out = _call(cluster, [
        ("filter", {"Pod": _pod(), "Nodes": nodelist, "NodeNames": None}, None),
        ("filter", {"Pod": _pod(), "NodeNames": names}, None),
        ("prioritize", {"Pod": _pod(), "Nodes": nodelist}, None),
        ("prioritize", {"Pod": _pod(), "NodeNames": ["idle", "busy"]}, None),
    ])
    status, f = out[0]
    assert status == 200, f
    assert [n["metadata"]["name"] for n in f["Nodes"]["items"]] == ["busy", "idle", "mid"]
    assert f["Nodes"]["items"][0] == _node("busy")  # the objects come back whole
    assert f["NodeNames"] is None and f["Error"] == ""
    assert set(f["FailedNodes"]) == {"full", "k8s-only"}
    assert "cpu" in f["FailedNodes"]["full"]
    assert "not a worker" in f["FailedNodes"]["k8s-only"]
    status, f = out[1]
    assert status == 200 and f["NodeNames"] == ["busy", "idle", "mid"] and f["Nodes"] is None
    status, prio = out[2]
    assert status == 200
    assert [p["Host"] for p in prio] == names
    assert all(isinstance(p["Score"], int) and 0 <= p["Score"] <= 10 for p in prio)
    score = {p["Host"]: p["Score"] for p in prio}
    # Ū cpu .375 over the four workers; 0.5 of 4 CPUs: the busy host is worst
    assert score["busy"] == 0 and max(score.values()) == 10
    assert score["k8s-only"] == 0 and score["full"] == 0
    assert out[3][0] == 200 and [p["Host"] for p in out[3][1]] == ["idle", "busy"]


def test_malformed_args_are_400_and_the_routes_need_a_credential(cluster):
    _host(cluster, "idle", 0.1)
    good = {"Pod": _pod(), "NodeNames": ["idle"]}
    out = _call(cluster, [
        ("filter", {"Pod": _pod(cpu="1e400"), "NodeNames": ["idle"]}, None),
        ("filter", {"Pod": _pod(memory="NaN"), "NodeNames": ["idle"]}, None),
        ("filter", {"Pod": _pod(cpu="-1"), "NodeNames": ["idle"]}, None),
        ("prioritize", {"Pod": _pod(memory="12 parsecs"), "NodeNames": ["idle"]}, None),
        ("prioritize", {"Pod": {"spec": {"containers": []}}, "NodeNames": ["idle"]}, None),
        ("filter", {"Pod": _pod()}, None),
        ("filter", {"Pod": _pod(), "NodeNames": [7]}, None),
        ("filter", "[1, 2", None),
        # no credential, a wrong one: refused before the body is read
        ("filter", good, {}),
        ("prioritize", good, {"Authorization": "Bearer not-the-token"}),
        ("prioritize", good, None),
    ])
    for status, body in out[:8]:
        assert status == 400 and "\n" not in body["error"], (status, body)
    assert "finite" in out[0][1]["error"] and "finite" in out[1][1]["error"]
    assert "quantity" in out[3][1]["error"]
    assert [o[0] for o in out[8:]] == [401, 401, 200]
    assert out[10][1] == [{"Host": "idle", "Score": 10}]
