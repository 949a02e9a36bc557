# The same pipeline as pipeline.toml, written with nix/lib.nix's helpers:
#   emergence pipeline run examples/ci/pipeline.nix
let
  lib = import ../../nix/lib.nix { };
  image = "image.nix";
in
lib.pipeline {
  stages = rec {
    lint = lib.stage {
      inherit image;
      command = "for f in /src/src/*.sh /src/test/*.sh; do sh -n $f || exit 1; done; echo lint ok";
      inputs = [ "src/*.sh" "test/*.sh" ];
    };
    build = lib.stage {
      inherit image;
      command = ''
        mkdir -p /out/bin
        { echo '#!/bin/sh'; cat /src/src/greet.sh /src/src/main.sh; } > /out/bin/greet
        chmod +x /out/bin/greet
        echo built $(wc -l < /out/bin/greet) lines
      '';
      inputs = [ "src/*.sh" ];
      outputs = [ "bin" ];
    };
    test = lib.stage {
      inherit image;
      command = "sh /src/test/test_greet.sh";
      inputs = [ "test/test_greet.sh" "@build" ];
      needs = [ "lint" ];
      timeout = 60;
    };
    docs = lib.stage {
      inherit image;
      command = "mkdir -p /out/doc && cp /src/docs/README.txt /out/doc/ && echo docs ok";
      inputs = [ "docs" ];
      outputs = [ "doc" ];
    };
    package = lib.stage {
      inherit image;
      command = "cp -r /in/build/bin /in/docs/doc . && tar -czf /out/greet.tar.gz bin doc && sha256sum /out/greet.tar.gz";
      inputs = [ "@build" "@docs" ];
      needs = [ "test" ];
      outputs = [ "greet.tar.gz" ];
    };
  };
}
