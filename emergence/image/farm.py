"""The links that put an image's content roots at / (as nixpkgs' buildEnv
does): written as the image's own layer by `build`, and made directly by
`run --image`, which needs no layers at all."""

import os


def farm_entries(contents):
    """The links that put the content roots at / (as buildEnv would): a top-level
    directory that one root alone provides is linked whole (/lib -> .../lib); one
    that several provide becomes a directory of links to their entries.
    Returns [(name, target or None for a directory)], sorted."""
    providers = {}
    for root in contents:
        for top in sorted(os.listdir(root)):
            providers.setdefault(top, []).append(os.path.join(root, top))
    out = []
    for top in sorted(providers):
        srcs = providers[top]
        dirs = [s for s in srcs if os.path.isdir(s) and not os.path.islink(s)]
        if len(srcs) == 1 or len(dirs) < 2:
            out.append((top, srcs[0]))
            continue
        out.append((top, None))
        seen = set()
        for src in dirs:
            for leaf in sorted(os.listdir(src)):
                if leaf not in seen:
                    seen.add(leaf)
                    out.append((f"{top}/{leaf}", os.path.join(src, leaf)))
    return out


def symlink_farm(contents):
    """The image's own layer: the farm_entries links, plus /tmp."""
    def extra(tar):
        names = set()
        for name, target in farm_entries(contents):
            names.add(name)
            if target is None:
                tar.dir(name)
            else:
                tar.symlink(name, target)
        if "tmp" not in names:
            tar.dir("tmp", 0o1777)
    return extra
