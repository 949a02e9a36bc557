"""Control groups, one module per seam (as crun's cgroup-*.c):

  hierarchy    which hierarchies are mounted: v1, v2 or hybrid
  paths        where the container's cgroup lives (cgroupsPath, systemd form)
  resources    linux.resources -> (controller, file, value), per version
  manager      make, limit, list and remove the container's cgroup
  devices_bpf  device rules as a cgroup2 BPF program
  freezer      pause and resume

Import the submodule you need: the lifecycle verbs load only what they use.
"""
