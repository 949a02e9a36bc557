# busybox from the host, imported into the store, as a tiny image.
let
  lib = import ../lib.nix { };
  tools = lib.runScript "busybox-tools" ''
    $busybox mkdir -p $out/bin
    $busybox cp ${lib.busybox}/busybox $out/bin/busybox
    for a in sh ls cat echo true false id hostname sleep env; do
      $busybox ln -s busybox $out/bin/$a
    done
  '';
in
lib.buildImage {
  name = "busybox";
  tag = "latest";
  contents = [ tools ];
  config = {
    Cmd = [ "/bin/sh" "-c" "echo hello from a Nix image" ];
    Env = [ "PATH=/bin" ];
    WorkingDir = "/";
    Labels = { "org.opencontainers.image.title" = "busybox"; };
  };
}
