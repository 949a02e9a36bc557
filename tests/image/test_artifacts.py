"""`emergence build` with real Nix, the OCI store, and the ways out of it:
skopeo, umoci, `bundle`, runc, and `run --image` straight from /nix/store."""

import json
import os
import shutil
import subprocess

import pytest
from conftest import REPO, emergence_command, spec_validator

EXAMPLES = os.path.join(REPO, "nix", "examples")
pytestmark = pytest.mark.skipif(shutil.which("nix-build") is None or os.geteuid() != 0,
                                reason="needs root and nix-build (apt-get install nix-bin)")


class Artifacts:
    def __init__(self, tmp_path):
        self.store = str(tmp_path / "store")
        self.root = str(tmp_path / "state")
        self.cmd = emergence_command() + ["--root", self.root, "--store", self.store]

    def __call__(self, *args, check=True, **kw):
        p = subprocess.run(self.cmd + list(args), capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL, **kw)
        assert "internal error" not in p.stderr, p.stderr
        if check and p.returncode != 0:
            raise AssertionError(f"emergence {' '.join(args)}: {p.returncode}\n{p.stderr}")
        return p

    def build(self, name, *extra):
        p = self("build", os.path.join(EXAMPLES, name), "--json", *extra)
        return json.loads(p.stdout)

    def blob(self, digest):
        with open(os.path.join(self.store, "blobs", "sha256", digest[7:]), "rb") as f:
            return f.read()


@pytest.fixture
def art(tmp_path):
    return Artifacts(tmp_path)


def test_build_is_reproducible_and_valid(art, tmp_path):
    first = art.build("hello-c.nix")
    again = art.build("hello-c.nix")
    other = Artifacts(tmp_path / "second")
    fresh = other.build("hello-c.nix")
    assert first["digest"] == again["digest"] == fresh["digest"]
    assert again["layersReused"] == first["layers"] - 1  # all store-path layers
    manifest = json.loads(art.blob(first["digest"]))
    config = json.loads(art.blob(manifest["config"]["digest"]))
    with open(os.path.join(art.store, "index.json")) as f:
        index = json.load(f)
    spec_validator("image-spec", "image-manifest-schema.json").validate(manifest)
    spec_validator("image-spec", "config-schema.json").validate(config)
    spec_validator("image-spec", "image-index-schema.json").validate(index)
    with open(os.path.join(art.store, "oci-layout")) as f:
        spec_validator("image-spec", "image-layout-schema.json").validate(json.load(f))
    assert config["config"]["Entrypoint"] == ["/bin/hello"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) == first["layers"]


def test_rebuild_after_one_path_changed_reuses_the_rest(art):
    base = art.build("hello-c.nix")
    changed = art.build("hello-c.nix", "--argstr", "greeting", "changed greeting")
    assert changed["digest"] != base["digest"]
    assert changed["layersReused"] == 1  # busybox; the program and its message changed
    p = art("run", "--image", changed["digest"], art.root.split("/")[-2] + "c")
    assert p.stdout == "changed greeting\n"


def test_run_image_straight_from_the_nix_store(art):
    art.build("hello-c.nix")
    p = art("run", "--image", "hello-c", "img1")
    assert p.stdout == "hello from C, built by Nix\n"
    p = art("run", "--image", "hello-c", "img2", "--", "/busybox", "sh", "-c",
            "mount | grep -c 'nix/store.*(ro,'")
    assert int(p.stdout) >= 2  # the closure, bound read-only
    assert not os.listdir(os.path.join(art.root, ".bundles"))


def test_skopeo_copy_and_umoci_unpack_and_runc(art, tmp_path):
    if not shutil.which("skopeo") or not shutil.which("umoci"):
        pytest.skip("needs skopeo and umoci")
    art.build("hello-c.nix")
    copy = tmp_path / "copy"
    subprocess.run(["skopeo", "copy", f"oci:{art.store}:hello-c:latest",
                    f"oci:{copy}:hello"], check=True, capture_output=True)
    bundle = tmp_path / "umoci-bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{copy}:hello", str(bundle)], check=True,
                   capture_output=True)
    assert os.readlink(bundle / "rootfs" / "bin").startswith("/nix/store/")  # buildEnv-style
    with open(bundle / "config.json") as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    with open(bundle / "config.json", "w") as f:
        json.dump(config, f)
    if shutil.which("runc"):
        p = subprocess.run(["runc", "--root", str(tmp_path / "runc"), "run", "-b", str(bundle),
                            f"umoci{os.getpid()}"], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
        assert p.stdout == "hello from C, built by Nix\n", p.stderr


def test_bundle_runs_with_emergence_and_runc(art, tmp_path):
    art.build("hello-c.nix")
    bundle = tmp_path / "bundle"
    art("bundle", "hello-c", str(bundle))
    with open(bundle / "config.json") as f:
        config = json.load(f)
    spec_validator("runtime-spec", "config-schema.json").validate(config)
    assert config["process"]["args"] == ["/bin/hello"]
    assert config["process"]["env"][-1] == "LANG=C"
    assert config["annotations"]["org.opencontainers.image.description"] == \
        "a C program built by Nix"
    p = art("run", "--bundle", str(bundle), "fromb")
    assert p.stdout == "hello from C, built by Nix\n"
    if shutil.which("runc"):
        p = subprocess.run(["runc", "--root", str(tmp_path / "runc"), "run", "-b", str(bundle),
                            f"b{os.getpid()}"], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
        assert p.stdout == "hello from C, built by Nix\n", p.stderr


def test_unpack_applies_whiteouts_and_keeps_modes(tmp_path):
    """A layer stack made by hand: the second layer deletes and hides things."""
    import io
    import tarfile

    from emergence.image.unpack import apply_layer

    def layer(path, entries):
        with tarfile.open(path, "w") as t:
            for name, kind, data, mode in entries:
                ti = tarfile.TarInfo(name)
                ti.mode, ti.uid, ti.gid = mode, 1000, 1000
                if kind == "dir":
                    ti.type = tarfile.DIRTYPE
                    t.addfile(ti)
                elif kind == "link":
                    ti.type, ti.linkname = tarfile.SYMTYPE, data
                    t.addfile(ti)
                elif kind == "hard":
                    ti.type, ti.linkname = tarfile.LNKTYPE, data
                    t.addfile(ti)
                else:
                    ti.size = len(data)
                    t.addfile(ti, io.BytesIO(data))
    l1, l2 = tmp_path / "l1.tar", tmp_path / "l2.tar"
    layer(l1, [("etc", "dir", None, 0o755), ("etc/a", "file", b"a", 0o644),
               ("etc/b", "file", b"b", 0o4755), ("opq", "dir", None, 0o755),
               ("opq/old", "file", b"x", 0o644), ("etc/hard", "hard", "etc/a", 0o644),
               ("lnk", "link", "/etc/a", 0o777)])
    layer(l2, [("etc/.wh.a", "file", b"", 0o644), ("opq/.wh..wh..opq", "file", b"", 0o644),
               ("opq/new", "file", b"y", 0o600)])
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    apply_layer(str(rootfs), str(l1))
    apply_layer(str(rootfs), str(l2))
    assert not (rootfs / "etc" / "a").exists()
    assert (rootfs / "etc" / "hard").read_bytes() == b"a"
    st = os.stat(rootfs / "etc" / "b")
    assert st.st_mode & 0o7777 == 0o4755 and st.st_uid == 1000
    assert sorted(os.listdir(rootfs / "opq")) == ["new"]
    assert os.readlink(rootfs / "lnk") == "/etc/a"
    evil = tmp_path / "evil.tar"
    layer(evil, [("../escape", "file", b"!", 0o644)])
    with pytest.raises(Exception, match="outside the rootfs"):
        apply_layer(str(rootfs), str(evil))
    evil2 = tmp_path / "evil2.tar"
    layer(evil2, [("lnk/through", "file", b"!", 0o644)])
    with pytest.raises(Exception, match="symlink"):
        apply_layer(str(rootfs), str(evil2))


def test_verify_catches_corruption_and_gc_keeps_what_is_referenced(art):
    built = art.build("hello-c.nix")
    art.build("hello-c.nix", "--argstr", "greeting", "other", "-t", "hello-c:other")
    assert art("verify").stdout == ""
    manifest = json.loads(art.blob(built["digest"]))
    victim = os.path.join(art.store, "blobs", "sha256", manifest["layers"][0]["digest"][7:])
    os.chmod(victim, 0o644)
    with open(victim, "r+b") as f:
        f.seek(100)
        f.write(b"CORRUPT")
    p = art("verify", check=False)
    assert p.returncode == 1 and manifest["layers"][0]["digest"] in p.stdout
    assert "1 problem" in p.stderr
    os.unlink(victim)
    # drop one tag: its unique blobs go, shared and still-tagged ones stay
    art("rmi", "hello-c:latest")
    before = set(os.listdir(os.path.join(art.store, "blobs", "sha256")))
    p = art("gc", "--json")
    removed = json.loads(p.stdout)["removed"]
    after = set(os.listdir(os.path.join(art.store, "blobs", "sha256")))
    assert removed == len(before - after) > 0
    other = art("inspect", "hello-c:other")
    for layer in json.loads(other.stdout)["manifest"]["layers"]:
        assert layer["digest"][7:] in after
    assert art("run", "--image", "hello-c:other", "after-gc").stdout == "other\n"


def test_tag_images_inspect(art):
    built = art.build("busybox.nix")
    art("tag", "busybox", "mybox:v1")
    listing = json.loads(art("images", "--json").stdout)
    refs = {r["ref"]: r["digest"] for r in listing}
    assert refs["busybox:latest"] == refs["mybox:v1"] == built["digest"]
    info = json.loads(art("inspect", "mybox:v1").stdout)
    assert info["config"]["config"]["Cmd"][-1] == "echo hello from a Nix image"
    assert art("run", "--image", "mybox:v1", "bb1").stdout == "hello from a Nix image\n"
    p = art("inspect", "nope", check=False)
    assert p.returncode == 1 and "no image 'nope'" in p.stderr


def test_bad_nix_expression_leaves_nothing(art, tmp_path):
    art.build("busybox.nix")
    blobs = set(os.listdir(os.path.join(art.store, "blobs", "sha256")))
    with open(os.path.join(art.store, "index.json")) as f:
        index = f.read()
    bad = tmp_path / "bad.nix"
    bad.write_text("let x = ; in x\n")
    p = art("build", str(bad), check=False)
    assert p.returncode == 1
    assert "error" in p.stderr and p.stderr.strip().splitlines()[-1].startswith(
        "emergence: building")
    missing = tmp_path / "missing-attr.nix"
    missing.write_text("{ a = 1; }\n")
    p = art("build", str(missing), "-A", "nope", check=False)
    assert p.returncode == 1 and "nope" in p.stderr
    assert set(os.listdir(os.path.join(art.store, "blobs", "sha256"))) == blobs
    with open(os.path.join(art.store, "index.json")) as f:
        assert f.read() == index


def test_export_import_round_trip(art, tmp_path):
    built = art.build("hello-c.nix")
    oci = tmp_path / "img-oci.tar"
    art("export", "hello-c", "-o", str(oci))
    art("export", "hello-c", "-o", str(tmp_path / "again.tar"))
    assert oci.read_bytes() == (tmp_path / "again.tar").read_bytes()  # deterministic
    docker = tmp_path / "img-docker.tar"
    art("export", "hello-c", "-o", str(docker), "--format", "docker-archive")
    other = Artifacts(tmp_path / "other")
    assert other("import", str(oci)).stdout.split() == ["hello-c:latest"]
    assert json.loads(other("inspect", "hello-c").stdout)["digest"] == built["digest"]
    assert other("import", str(docker), "-t", "fromdocker:v1").stdout.split() == \
        ["fromdocker:v1"]
    assert other("verify").returncode == 0
    # a corrupt archive is refused and tags nothing
    data = bytearray(oci.read_bytes())
    manifest = json.loads(art.blob(built["digest"]))
    import tarfile
    with tarfile.open(oci) as t:
        member = t.getmember(f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}")
    at = member.offset_data + 600  # inside that layer's bytes
    data[at:at + 4] = b"BAD!"
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    third = Artifacts(tmp_path / "third")
    p = third("import", str(bad), check=False)
    assert p.returncode == 1 and "corrupt" in p.stderr
    assert third("images", "--json").stdout.strip() == "[]"


def test_flake_exposes_the_library_and_images():
    """The flake evaluates here for what needs no nixpkgs (lib purely; the example
    images with --impure, since they import the host's busybox)."""
    nix = ["nix", "--extra-experimental-features", "nix-command flakes", "eval",
           "--no-write-lock-file"]
    if subprocess.run(["git", "-C", REPO, "ls-files", "--error-unmatch", "flake.nix"],
                      capture_output=True).returncode != 0:
        pytest.skip("flake.nix is not tracked by git here")
    p = subprocess.run(nix + [f"{REPO}#lib", "--apply", "l: builtins.attrNames (l {})",
                              "--impure"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "buildImage" in p.stdout
    p = subprocess.run(nix + ["--impure", "--raw",
                              f"{REPO}#images.x86_64-linux.hello-c.drvPath"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("/nix/store/") and p.stdout.endswith(".drv")


def test_concurrent_builds_into_one_store(art):
    import threading
    results = {}

    def go(name, *extra):
        results[name + "".join(extra)] = art("build", os.path.join(EXAMPLES, name), "--json",
                                             *extra, check=False)

    threads = [threading.Thread(target=go, args=("hello-c.nix",)),
               threading.Thread(target=go, args=("busybox.nix",)),
               threading.Thread(target=go, args=("hello-c.nix", "-t", "twin:v1"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(p.returncode == 0 for p in results.values()), \
        [p.stderr for p in results.values()]
    refs = {r["ref"] for r in json.loads(art("images", "--json").stdout)}
    assert refs == {"hello-c:latest", "busybox:latest", "twin:v1"}
    assert art("verify").stdout == ""


def test_adopt_renames_or_copies_verified_across_filesystems(tmp_path):
    """Store.adopt: a file on the store's filesystem is renamed in; one on another
    (tmpfs here) is copied through a BlobWriter, which hashes it again."""
    import hashlib

    from emergence.image.store import Store
    s = Store(str(tmp_path / "store"))
    data = os.urandom(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    here = tmp_path / "part"
    here.write_bytes(data)
    assert s.adopt(str(here), digest) and not here.exists()
    assert s.read(digest) == data
    if os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        return  # no second filesystem to copy from
    other = hashlib.sha256(b"x" + data).hexdigest()
    for name, want, ok in (("good", "sha256:" + other, True), ("bad", "sha256:" + "0" * 64, False)):
        away = f"/dev/shm/emergence-adopt-{os.getpid()}-{name}"
        with open(away, "wb") as f:
            f.write(b"x" + data)
        try:
            assert s.adopt(away, want) is ok
            assert s.has(want) is ok
        finally:
            os.unlink(away)
    assert not [n for n in os.listdir(s.blob_dir) if n.startswith(".tmp")]  # nothing half made
