"""Build emergence: the Python package, the libseccomp cffi extension
(emergence.runtime._native) and the static shim executable
(emergence/runtime/emergence-shim)."""

import os
import sysconfig
from distutils.command.build_scripts import build_scripts  # setuptools ships distutils

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
# The shim's parts, in the manner of crun's libcrun: one file per concern.
SHIM_SOURCES = ["shim.c", "rootfs.c", "process.c", "seccomp.c", "sync.c", "copyup.c"]
# The front-end's: csrc/front.c and its parts, front_*.c (front.h says which is what).
FRONT_SOURCES = ["front.c", "front_wire.c", "front_child.c", "front_trust.c", "front_demand.c",
                 "front_prime.c"]


class BuildWithShim(build_ext):
    """build_ext that also links the shim (csrc/shim.c and its parts) into a static executable.

    The shim must be a standalone program (not a Python extension): it is
    what runs between clone and exec, so no interpreter is mapped into the
    container's init.
    """

    def run(self):
        super().run()
        if self.inplace:
            out_dir = os.path.join(HERE, "emergence", "runtime")
        else:
            out_dir = os.path.join(self.build_lib, "emergence", "runtime")
        os.makedirs(out_dir, exist_ok=True)
        objects = self.compiler.compile(
            [os.path.join("csrc", name) for name in SHIM_SOURCES],
            output_dir=self.build_temp,
            extra_postargs=["-O2", "-Wall", "-Wextra", "-fno-strict-aliasing"])
        self.compiler.link_executable(
            objects, "emergence-shim", output_dir=out_dir, extra_postargs=["-static", "-s"])
        with open(os.path.join(os.path.dirname(out_dir), "_build_id.py"), "w") as f:
            f.write(f'BUILD_ID = "{BUILD_ID}"\n')


class ScriptsWithBinaries(build_scripts):
    """build_scripts reads every script as Python source; the front-end is an
    executable, so it is copied as it is."""

    def run(self):
        binary = [s for s in self.scripts if open(s, "rb").read(4) == b"\x7fELF"]
        self.scripts = [s for s in self.scripts if s not in binary]
        super().run()
        self.mkpath(self.build_dir)
        for script in binary:
            self.copy_file(script, os.path.join(self.build_dir, os.path.basename(script)))


def build_id():
    """A digest of every source file: the C front-end and the warm planner
    refuse each other unless they come from the same build."""
    import hashlib
    h = hashlib.sha256()
    for top in ("emergence", "csrc"):
        for d, dirs, files in sorted(os.walk(os.path.join(HERE, top))):
            dirs.sort()
            for name in sorted(files):
                if name.endswith((".py", ".c", ".h")) and name != "_build_id.py":
                    with open(os.path.join(d, name), "rb") as f:
                        h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


BUILD_ID = build_id()


def front_end(name="emergence"):
    """bin/emergence (and bin/emergence-cni): the C front-end (csrc/front.c and
    its parts) that asks the node's warm planner to run the call, or executes NAME-py
    (the cold path)."""
    import subprocess
    out_dir = os.path.join(HERE, "build", "scripts-launcher")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-Wall", "-Wextra", "-static", "-s",
                    f'-DBUILD_ID="{BUILD_ID}"',
                    *[os.path.join(HERE, "csrc", src) for src in FRONT_SOURCES],
                    "-o", path], check=True)
    return os.path.relpath(path, HERE)


# Each requirement and what it installs beside its importers: the launchers
# check that these are in the package's own directory (see fast_launcher).
REQUIRES = {
    "cffi>=1.15": "_cffi_backend" + sysconfig.get_config_var("EXT_SUFFIX"),
    "pyroute2>=0.9": "pyroute2",
    "aiohttp>=3.9": "aiohttp",
    "cryptography>=41": "cryptography",
    "tqdm>=4.60": "tqdm",
    "etcd3gw>=2.4": "etcd3gw",
    "requests>=2.28": "requests",
    "prometheus-client>=0.16": "prometheus_client",
}


def fast_launcher(name="emergence-py", entry="from emergence.cli import main", needs=()):
    """bin/emergence-py runs Python with -S: engines call it constantly and site
    processing can cost more than the whole command (a .pth file that imports
    certifi took ~90 ms of a 120 ms `state` here).  The package directories
    this interpreter has now (its own, and the system's under a venv with
    system site packages) are baked in; when the package, or a library it
    NEEDS on every call, is not in them (an editable install, a path only a
    .pth file adds), it falls back to normal site processing.  A few stat
    calls; the site processing they spare can cost more than a verb."""
    import sys
    platlib = sysconfig.get_paths()["platlib"]
    dirs = [platlib] + [p for p in sys.path if p != platlib and os.path.isabs(p)
                        and os.path.basename(p) in ("site-packages", "dist-packages")
                        and os.path.isdir(p)]
    os.makedirs(os.path.join(HERE, "build", "scripts-launcher"), exist_ok=True)
    path = os.path.join(HERE, "build", "scripts-launcher", name)
    check = ""
    if needs:
        check = (f"    from os.path import exists\n"
                 f"    if not all(any(exists(d + '/' + n) for d in {dirs!r})\n"
                 f"               for n in {tuple(needs)!r}):\n"
                 f"        raise ImportError\n")
    with open(path, "w") as f:
        # A sh/Python polyglot: pip rewrites python shebangs and drops their flags.
        f.write(f"""#!/bin/sh
"exec" "{sys.executable}" "-sS" "$0" "$@"
import sys
sys.path[0:0] = {dirs!r}
try:
{check}    {entry}
except ImportError:
    del sys.path[0:{len(dirs)}]
    import site
    site.main()
    {entry}
sys.exit(main())
""")
    os.chmod(path, 0o755)
    return os.path.relpath(path, HERE)


setup(
    name="emergence",
    version="0.1.0",
    description="A low-level OCI container runtime with a small C shim",
    packages=find_packages(include=["emergence", "emergence.*"]),
    # nix/lib.nix (a link to it): `emergence build` passes -I emergence=<this dir>,
    # so an expression says `import <emergence/lib.nix> { }` wherever it lives
    package_data={"emergence": ["nix/*.nix"]},
    python_requires=">=3.9",
    install_requires=list(REQUIRES),
    extras_require={"test": [
        "pytest>=7",
        "jsonschema>=4.18",
        "ruff",
        "matplotlib>=3.6",
        "oras>=0.2",
        "junitparser>=3",
    ]},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["emergence/runtime/_build_native.py:ffi"],
    cmdclass={"build_ext": BuildWithShim, "build_scripts": ScriptsWithBinaries},
    scripts=[front_end(),
             fast_launcher(needs=REQUIRES.values()),
             # the CNI plugin: the same front-end; cold, Relay's cni module alone
             front_end("emergence-cni"),
             # a planner started on demand by the front-end (or by systemd)
             fast_launcher("emergence-planner", "from emergence.node.planner import main",
                           needs=REQUIRES.values()),
             # (Relay speaks rtnetlink itself: the plugin needs no library)
             fast_launcher("emergence-cni-py",
                           "from emergence.relay.cni import cold_main as main")],
    zip_safe=False,
)
