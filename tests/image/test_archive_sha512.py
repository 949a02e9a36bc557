"""`emergence export` and `import` of an image with sha512 blobs (pushed to a
node that way): they sit under blobs/sha512/ of the OCI layout and come back
checked against their sha512 digests."""

import hashlib
import os
import subprocess
import tarfile

from conftest import emergence_command

from emergence.image.store import CONFIG, LAYER, MANIFEST, Store, canonical


def test_sha512_blobs_export_and_import(tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    s = Store(src)
    layer = os.urandom(3000)
    ldigest, lsize = s.put(layer, "sha512")
    cdigest, csize = s.put(canonical({"rootfs": {"type": "layers", "diff_ids": []}}))
    mdigest, msize = s.put(canonical({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": cdigest, "size": csize},
        "layers": [{"mediaType": LAYER, "digest": ldigest, "size": lsize}]}))
    s.set_ref("app:v1", {"mediaType": MANIFEST, "digest": mdigest, "size": msize})
    out = str(tmp_path / "app.tar")

    def run(store, *args):
        p = subprocess.run(emergence_command() + ["--store", store, *args],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p
    run(src, "export", "app:v1", "-o", out)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        assert f"blobs/sha512/{ldigest[7:]}" in names
        assert tar.extractfile(f"blobs/sha512/{ldigest[7:]}").read() == layer
        assert f"blobs/sha256/{mdigest[7:]}" in names
    run(dst, "import", out)
    got = Store(dst)
    assert got.resolve("app:v1")["digest"] == mdigest
    with open(got.blob_path(ldigest), "rb") as f:
        assert "sha512:" + hashlib.sha512(f.read()).hexdigest() == ldigest
    # a corrupt sha512 blob is refused, not stored under its name
    with tarfile.open(out) as tar, tarfile.open(tmp_path / "bad.tar", "w") as bad:
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isfile() else None
            if m.name == f"blobs/sha512/{ldigest[7:]}":
                data = b"x" + data[1:]
            if data is not None:
                import io
                m.size = len(data)
                bad.addfile(m, io.BytesIO(data))
            else:
                bad.addfile(m)
    p = subprocess.run(emergence_command() + ["--store", str(tmp_path / "dst2"), "import",
                                              str(tmp_path / "bad.tar")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "corrupt" in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(Store(str(tmp_path / "dst2")).blob_path(ldigest))
