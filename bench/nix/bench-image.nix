# A synthetic image for bench/build_image.py: `files` files holding `megabytes`
# in total, a small path that changes with `variant`, and busybox for /bin/true.
{ files ? 2000, megabytes ? 30, variant ? "a" }:
let
  lib = import ../../nix/lib.nix { };
  data = lib.runScript "bench-data-${toString files}-${toString megabytes}" ''
    n=${toString files}
    per=$(( ${toString megabytes} * 1048576 / n ))
    i=0
    while [ $i -lt $n ]; do
      d=$out/d$(( i / 100 ))
      [ -d $d ] || $busybox mkdir -p $d
      $busybox head -c $per /dev/zero | $busybox tr '\0' "$(( i % 10 ))" > $d/f$i
      i=$(( i + 1 ))
    done
  '';
  small = lib.runScript "bench-small-${variant}" ''
    $busybox mkdir -p $out
    echo ${variant} > $out/variant
  '';
  tools = lib.runScript "bench-tools" ''
    $busybox mkdir -p $out/bin
    $busybox cp ${lib.busybox}/busybox $out/bin/busybox
    $busybox ln -s busybox $out/bin/true
  '';
in
lib.buildImage {
  name = "bench";
  tag = variant;
  contents = [ tools data small ];
  config = { Cmd = [ "/bin/true" ]; };
}
