# Emergence's Nix library.  Needs no nixpkgs: the only tool a build step uses is
# a static busybox (from the host by default), and `contents` may be any
# derivations, nixpkgs' included.
#
#   buildImage { name, tag ? "latest", contents ? [], config ? {}, maxLayers ? 100 }
#
# builds a *description* of an image, not the image: a directory with
#   image.json  name, tag, config (Entrypoint/Cmd/Env/WorkingDir/User/
#               ExposedPorts/Volumes/Labels), the store paths of `contents`,
#               and the layer budget
#   closure     the closure graph of `contents` (exportReferencesGraph format)
# `emergence build` turns it into OCI layers in its own store, so nothing large
# is ever written into /nix/store.
{ busybox ? builtins.path {
    path = /usr/bin;
    name = "busybox-static";
    filter = p: t: baseNameOf p == "busybox";
  }
}:
let
  sh = "${busybox}/busybox";
in
rec {
  inherit busybox;

  # A derivation built by a busybox shell script (for examples and glue).
  runScript = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = sh;
    args = [ "sh" "-c" script ];
    PATH = "${busybox}";
    busybox = sh;
  };

  buildImage = { name, tag ? "latest", contents ? [ ], config ? { }, maxLayers ? 100 }:
    assert maxLayers >= 2;
    derivation {
      name = "${name}-image-description";
      system = builtins.currentSystem;
      builder = sh;
      # one graph file per content root (the attribute takes name/path pairs)
      exportReferencesGraph = builtins.concatLists (builtins.genList
        (i: [ "closure-${toString i}" (builtins.elemAt contents i) ])
        (builtins.length contents));
      description = builtins.toJSON {
        inherit name tag config maxLayers;
        contents = map toString contents;
      };
      args = [ "sh" "-c" ''
        ${sh} mkdir -p $out
        ${sh} cat closure-* > $out/closure 2>/dev/null || : > $out/closure
        printf '%s' "$description" > $out/image.json
      '' ];
    };

  # Host toolchains in an image, offline (no nixpkgs): an interpreter, a
  # compiler, with the shared libraries they load, copied into one store path
  # at their host paths (/usr/bin/python3.11, /lib/x86_64-linux-gnu/libc.so.6,
  # /lib64/ld-linux-x86-64.so.2), so in the image they are where the host has
  # them.  Every file is imported with builtins.path, so the store path follows
  # the host's bytes: an upgrade on the host makes a new image, never a stale
  # one.  `paths` are absolute host paths (files or directories; symlinks are
  # followed), `exclude` names dropped anywhere below them, `libraries` the
  # ELF files whose shared libraries to add (default: every file under `paths`
  # that the dynamic loader can list), `postBuild` a script run in $out.
  #
  #   hostTool { name = "gcc"; paths = [ "/usr/bin/gcc-12" "/usr/lib/gcc" ]; }
  hostTool = { name, paths, exclude ? [ ], postBuild ? "" }:
    let
      import1 = p: builtins.path {
        path = /. + p;
        name = "host" + builtins.replaceStrings [ "/" "+" ] [ "-" "_" ] p;
        filter = q: t: !(builtins.elem (baseNameOf q) exclude);
      };
      files = map (p: { dest = p; src = import1 p; }) paths;
      # Import from derivation: the dynamic loader lists what the imported
      # ELF files need; the answer names host paths, imported in turn.
      needed = import (runScript "${name}-libraries" ''
        ld=/lib64/ld-linux-x86-64.so.2
        [ -e $ld ] || ld=$($busybox ls /lib/ld-linux*.so* 2>/dev/null | $busybox head -n1)
        $busybox find ${builtins.concatStringsSep " " (map (f: "${f.src}") files)} -type f \
          | while read -r f; do
              $busybox head -c 4 "$f" | $busybox grep -q ELF || continue
              $ld --list "$f" 2>/dev/null
            done \
          | $busybox awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' \
          | $busybox sort -u \
          | while read -r lib; do
              echo "{ dest = \"$lib\"; src = \"$($busybox readlink -f "$lib")\"; }"
            done > list
        { echo "["; $busybox cat list; echo "]"; } > $out
      '');
      libs = map (l: { inherit (l) dest; src = import1 l.src; }) needed;
    in
    runScript name ''
      ${builtins.concatStringsSep "\n" (map (f: ''
        $busybox mkdir -p "$out$($busybox dirname ${f.dest})"
        $busybox cp -RL ${f.src} "$out${f.dest}"
      '') (files ++ libs))}
      $busybox chmod -R u+w $out
      cd $out
      ${postBuild}
    '';

  # The host's Python (Debian's /usr/bin/python3.X and its standard library)
  # as a hostTool.  Its .pyc files are compiled here as unchecked-hash pycs
  # (PEP 552): a store file's mtime is 1, so timestamp pycs would be stale and
  # every import would compile again; unchecked-hash pycs are used as they are.
  hostPython = { version ? "3.11", extraPaths ? [ ],
                 exclude ? [ "__pycache__" "test" "tests" "idlelib" "tkinter" "turtledemo"
                             "ensurepip" "lib2to3" "site-packages" "dist-packages" ] }:
    hostTool {
      name = "python${version}";
      paths = [ "/usr/bin/python${version}" "/usr/lib/python${version}" ] ++ extraPaths;
      inherit exclude;
      postBuild = ''
        $busybox ln -s python${version} usr/bin/python3
        ./usr/bin/python${version} -I -m compileall -q -j0 \
          --invalidation-mode unchecked-hash usr/lib/python${version} >/dev/null
      '';
    };

  # A CI pipeline for `emergence pipeline run FILE.nix`: the fields of the TOML
  # form (README, "CI pipelines").  Images are .nix files given as strings
  # relative to the pipeline file (a Nix path would be copied into the store and
  # lose its neighbours), or image refs.  `stage` fills the defaults so a typo'd
  # field fails at evaluation, and `needs` may name stages by their attribute.
  stage = { image, command, env ? { }, inputs ? [ ], outputs ? [ ], needs ? [ ],
            timeout ? 3600, retries ? 0, network ? false, cache ? true, secrets ? [ ], limits ? { },
            description ? "" }@args: args;
  pipeline = { stages, secrets ? { } }: { inherit stages secrets; };
}
