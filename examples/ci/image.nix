# The CI image of the example: busybox with the applets a shell project's
# build, test and packaging use.  Builds offline (no nixpkgs).
let
  lib = import ../../nix/lib.nix { };
  tools = lib.runScript "ci-tools" ''
    $busybox mkdir -p $out/bin
    $busybox cp ${lib.busybox}/busybox $out/bin/busybox
    for a in sh ls cat echo true false test [ mkdir cp mv rm chmod grep sed wc tar gzip \
             sort head tail tr cut env sleep sha256sum diff printf find date nc; do
      $busybox ln -s busybox "$out/bin/$a"
    done
  '';
in
lib.buildImage {
  name = "emergence-ci";
  tag = "latest";
  contents = [ tools ];
  config = {
    Cmd = [ "/bin/sh" ];
    Env = [ "PATH=/bin" ];
    WorkingDir = "/";
  };
}
