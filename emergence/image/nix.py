"""Real Nix evaluates and realises an expression (offline by default); through
nix/lib.nix's buildImage the result is a small description: the image config,
the content roots and their closure graph."""

import os
import sys

from ..errors import EmergenceError


def offline():
    """No substituters when the binary cache cannot be reached (the usual case here)."""
    if os.environ.get("EMERGENCE_NIX_OFFLINE") in ("0", "no"):
        return False
    return True


def lib_dir():
    """Where the installed package keeps nix/lib.nix: on NIX_PATH as
    `emergence`, so `import <emergence/lib.nix> { }` needs no path."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "nix")


def search_path():
    return ["-I", f"emergence={lib_dir()}"]


def realise(expr_file, attr=None, args=(), argstrs=(), progress=False, options=()):
    """nix-build the expression (with OPTIONS, e.g. the peers' caches as
    substituters); return the description directory."""
    import subprocess  # lazily: only a build needs it
    cmd = ["nix-build", expr_file, "--no-out-link"] + search_path()
    if attr:
        cmd += ["-A", attr]
    for name, value in args:
        cmd += ["--arg", name, value]
    for name, value in argstrs:
        cmd += ["--argstr", name, value]
    if offline() and not options:
        cmd += ["--option", "substituters", ""]
    cmd += list(options)
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if progress else
                           subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise EmergenceError("nix-build is not installed (apt-get install nix-bin)") from None
    if p.returncode != 0:
        if not progress and p.stderr:
            sys.stderr.write(p.stderr)  # as Nix printed it
        last = [line for line in (p.stderr or "").splitlines() if line.startswith("error")]
        summary = last[-1] if last else f"nix-build exited with status {p.returncode}"
        raise EmergenceError(f"building {expr_file} failed: {summary}")
    out = p.stdout.strip().splitlines()
    if not out:
        raise EmergenceError(f"nix-build {expr_file} printed no store path")
    desc_dir = out[-1]
    if not os.path.exists(os.path.join(desc_dir, "image.json")):
        raise EmergenceError(f"{expr_file} did not build an image description (use "
                             "buildImage from nix/lib.nix); got {desc_dir}")
    return desc_dir


def parse_closure(text):
    """exportReferencesGraph's format -> {path: [references]}."""
    lines = text.splitlines()
    graph = {}
    i = 0
    while i < len(lines):
        path = lines[i]
        if not path:
            i += 1
            continue
        count = int(lines[i + 2])
        graph[path] = [r for r in lines[i + 3:i + 3 + count] if r != path]
        i += 3 + count
    return graph
