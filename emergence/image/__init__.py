"""Images: the content-addressed store and what fills and reads it.

  commands.py      the verbs and their options
  store.py         the OCI image layout: atomic, digest-verified writes
  nix.py           real Nix realises an expression into an image description
  layers.py        the closure grouped into layers by popularity, cached
  tarwriter.py     byte-reproducible tar layers
  farm.py          the links that put the content roots at /
  build.py         `build`: description -> layers, config, manifest, tag
  images.py        images, inspect, tag, rmi, gc, verify
  archive.py       export/import of oci-archive and docker-archive
  unpack.py        `bundle`: layers -> rootfs + config.json
  run_image.py     `run --image`: a rootfs of /nix/store binds, nothing unpacked

May import: the top-level helpers, and runtime/ to run what it builds (the
default config of a bundle, `run`); on a store miss (`run --image`) or for
the peers' Nix caches (`build`), the functions share/__init__.py exports,
imported only then.  Nothing in runtime/ imports this.
"""
