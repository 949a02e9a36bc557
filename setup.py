"""Build emergence: the Python package, the libseccomp cffi extension
(emergence.runtime._native) and the static shim executable
(emergence/runtime/emergence-shim)."""

import os
import sysconfig

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithShim(build_ext):
    """build_ext that also links csrc/shim.c into a static executable.

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
            [os.path.join("csrc", "shim.c")], output_dir=self.build_temp,
            extra_postargs=["-O2", "-Wall", "-Wextra", "-fno-strict-aliasing"])
        self.compiler.link_executable(
            objects, "emergence-shim", output_dir=out_dir, extra_postargs=["-static", "-s"])


def fast_launcher():
    """bin/emergence runs Python with -S: engines call it constantly and site
    processing can cost more than the whole command.  The package directory
    of this interpreter's default scheme is baked in; elsewhere it falls back
    to normal site processing."""
    import sys
    platlib = sysconfig.get_paths()["platlib"]
    os.makedirs(os.path.join(HERE, "build", "scripts-launcher"), exist_ok=True)
    path = os.path.join(HERE, "build", "scripts-launcher", "emergence")
    with open(path, "w") as f:
        # A sh/Python polyglot: pip rewrites python shebangs and drops their flags.
        f.write(f"""#!/bin/sh
"exec" "{sys.executable}" "-sS" "$0" "$@"
import sys
sys.path.insert(0, {platlib!r})
try:
    from emergence.cli import main
except ImportError:
    del sys.path[0]
    import site
    site.main()
    from emergence.cli import main
sys.exit(main())
""")
    os.chmod(path, 0o755)
    return os.path.relpath(path, HERE)


setup(
    name="emergence",
    version="0.1.0",
    description="A low-level OCI container runtime with a small C shim",
    packages=find_packages(include=["emergence", "emergence.*"]),
    python_requires=">=3.9",
    install_requires=[
        "cffi>=1.15",
        "prometheus-client>=0.16",
        "aiohttp>=3.8",
    ],
    extras_require={"test": [
        "pytest>=7",
        "jsonschema>=4.18",
        "ruff",
    ]},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["emergence/runtime/_build_native.py:ffi"],
    cmdclass={"build_ext": BuildWithShim},
    scripts=[fast_launcher()],
    zip_safe=False,
)
