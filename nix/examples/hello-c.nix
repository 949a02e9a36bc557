# A small C program compiled by a derivation, plus a data path it refers to,
# so the image has a closure of several store paths.  Builds offline with the
# host's gcc (Debian's nix builds without a sandbox); `greeting` and `tag` can
# be changed with --argstr to see incremental rebuilds.
{ greeting ? "hello from C, built by Nix", tag ? "latest" }:
let
  lib = import ../lib.nix { };
  message = lib.runScript "hello-message" ''
    $busybox mkdir -p $out/share
    echo '${greeting}' > $out/share/message
  '';
  hello = lib.runScript "hello-c" ''
    $busybox mkdir -p $out/bin src
    cat > src/hello.c <<'C'
    #include <stdio.h>
    int main(void) {
        FILE *f = fopen("${message}/share/message", "r");
        char line[256];
        if (!f || !fgets(line, sizeof line, f)) return 1;
        fputs(line, stdout);
        return 0;
    }
    C
    PATH=/usr/bin:/bin /usr/bin/gcc -O2 -static -o $out/bin/hello src/hello.c
  '';
in
lib.buildImage {
  name = "hello-c";
  inherit tag;
  # busybox stays the same when the greeting changes: its layer is reused
  contents = [ hello lib.busybox ];
  config = {
    Entrypoint = [ "/bin/hello" ];
    Env = [ "LANG=C" ];
    Labels = { "org.opencontainers.image.description" = "a C program built by Nix"; };
  };
  maxLayers = 10;
}
