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
