{
  description = "Emergence: an OCI container runtime with a C shim, and Nix-built OCI images";

  # No inputs: the library and the examples build without nixpkgs (and without a
  # network), and the package is an overlay for whichever nixpkgs the user has.
  outputs = { self }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
    in
    {
      # buildImage and friends (see nix/lib.nix); takes { busybox ? <host's> }.
      lib = import ./nix/lib.nix;

      # Image descriptions for `emergence build` (no nixpkgs needed).
      images = forAll (system: {
        busybox = import ./nix/examples/busybox.nix;
        hello-c = import ./nix/examples/hello-c.nix { };
      });

      # Emergence itself, for nixpkgs users: nixpkgs.overlays = [ emergence.overlays.default ]
      overlays.default = final: prev: {
        emergence = final.python3Packages.buildPythonApplication {
          pname = "emergence";
          version = "0.1.0";
          format = "pyproject";
          src = self;
          nativeBuildInputs = with final.python3Packages; [ setuptools wheel cffi ];
          buildInputs = [ final.libseccomp final.glibc.static ];
          propagatedBuildInputs = [ final.python3Packages.cffi ];
          doCheck = false; # the suite runs real containers as root
        };
      };
    };
}
