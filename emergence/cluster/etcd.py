"""A local etcd server: what `cluster init` starts (and the tests run:
Debian's etcd-server).  With TLS (the default) clients and peers need a
certificate issued by the cluster CA; plain http only when asked for."""

import os
import shutil
import socket
import subprocess
import time

from ..errors import EmergenceError


def free_port():
    """A loopback TCP port nobody listens on now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def etcd_binary():
    path = shutil.which("etcd")
    if not path:
        raise EmergenceError("etcd is not installed; `apt-get install etcd-server` or give "
                             "--etcd URL of a running one")
    return path


def start(data_dir, name="emergence", client_port=None, peer_port=None, log=None,
          detach=False, also_listen=(), material=None):
    """Start one etcd member on 127.0.0.1 (and on the addresses ALSO_LISTEN)
    with its data in DATA_DIR; return (process, client URL) once it answers.
    With MATERIAL (files.Material) it serves TLS with that node's certificate
    and takes only clients and peers with certificates from its CA."""
    procs, urls = start_members([data_dir], [name], [client_port], [peer_port], log=log,
                                detach=detach, also_listen=also_listen, material=material)
    return procs[0], urls[0]


def start_members(data_dirs, names, client_ports, peer_ports, log=None, detach=False,
                  also_listen=(), material=None):
    """Start one etcd cluster of len(NAMES) members on this host (each its own
    data dir and ports; a port None: the kernel picks one); return
    ([process], [client URL]) once every member answers (which needs a quorum,
    so all are started before any is waited for)."""
    client_ports = [p or free_port() for p in client_ports]
    peer_ports = [p or free_port() for p in peer_ports]
    scheme = "https" if material is not None else "http"
    urls = [f"{scheme}://127.0.0.1:{p}" for p in client_ports]
    peers = [f"{scheme}://127.0.0.1:{p}" for p in peer_ports]
    initial = ",".join(f"{n}={p}" for n, p in zip(names, peers))
    procs = []
    try:
        for i, (data_dir, name) in enumerate(zip(data_dirs, names)):
            listen = ",".join([urls[i]] + [f"{scheme}://{a}:{client_ports[i]}"
                                           for a in also_listen])
            os.makedirs(data_dir, mode=0o700, exist_ok=True)
            argv = [etcd_binary(), "--name", name, "--data-dir", data_dir,
                    "--listen-client-urls", listen, "--advertise-client-urls", urls[i],
                    "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
                    "--initial-cluster", initial, "--initial-cluster-state", "new"]
            if len(names) > 1:
                argv += ["--initial-cluster-token", "emergence-" + "-".join(names)]
            if material is not None:
                m = material
                argv += ["--client-cert-auth", "--trusted-ca-file", m.ca,
                         "--cert-file", m.cert, "--key-file", m.key,
                         "--peer-client-cert-auth", "--peer-trusted-ca-file", m.ca,
                         "--peer-cert-file", m.cert, "--peer-key-file", m.key]
            path = log if len(names) == 1 or not log else f"{log}.{name}"
            out = open(path or os.devnull, "ab")
            try:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=out,
                                              stdin=subprocess.DEVNULL,
                                              start_new_session=detach,
                                              preexec_fn=_tied(detach)))
            finally:
                out.close()
        for url, proc in zip(urls, procs):
            wait_ready(url, proc, material=material)
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    return procs, urls


def _tied(detach):
    """A member not detached is its starter's (a test, the node's embedded
    etcd): it dies with it, even by kill -9.  Only from the main thread, to
    which the death signal is tied (the node starts its etcd from a worker
    thread and stops it itself)."""
    import threading
    if detach or threading.current_thread() is not threading.main_thread():
        return None
    from ..lifetime import dies_with_us
    return dies_with_us()


def wait_ready(url, proc=None, timeout=20.0, material=None):
    """Wait until etcd answers at URL (its status needs no etcd user)."""
    import requests
    kw = {}
    if url.startswith("https:"):
        if material is None or not material.exists():
            kw["verify"] = False
        else:
            kw = {"verify": material.ca, "cert": (material.cert, material.key)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise EmergenceError(f"etcd exited with status {proc.returncode} before it "
                                 "answered; see its log")
        try:
            r = requests.post(url + "/v3/maintenance/status", json={}, timeout=1, **kw)
            if r.ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise EmergenceError(f"etcd at {url} did not answer within {timeout:.0f} s")
