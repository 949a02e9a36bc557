# The two commands of the README.  Both install what they need first.
#   make demo   set up and run the busybox example
#   make test   ruff + the whole test suite (real containers: run as root)

PYTHON ?= python3
APT_PACKAGES = gcc libc6-dev make libseccomp-dev busybox-static iproute2 procps \
               util-linux file runc crun hyperfine podman conmon containerd \
               nix-bin skopeo umoci curl \
               iputils-ping nftables containernetworking-plugins etcd-server \
               prometheus iperf3 strace
export PIP_BREAK_SYSTEM_PACKAGES = 1
export PIP_ROOT_USER_ACTION = ignore
export DEBIAN_FRONTEND = noninteractive

.PHONY: deps install demo test bench

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

# Offline first: with everything already installed (the build's setuptools, wheel and
# cffi too) no registry is asked, so a slow one costs nothing; else the usual install.
install: deps
	$(PYTHON) -m pip install -q --no-index --no-build-isolation '.[test]' 2>/dev/null \
	    || $(PYTHON) -m pip install -q '.[test]'

bundles/busybox/rootfs/bin/busybox: bundles/busybox/make-rootfs.sh
	bundles/busybox/make-rootfs.sh >/dev/null

demo: install bundles/busybox/rootfs/bin/busybox
	cd bundles/busybox && emergence run demo-$$$$
	emergence build nix/examples/hello-c.nix
	emergence run --image hello-c demo-image-$$$$

test: install
	$(PYTHON) -m ruff check .
	cd tests && $(PYTHON) -m pytest -q -p no:cacheprovider

bench: install
	$(PYTHON) bench/verbs.py
	$(PYTHON) bench/build_image.py
