"""The runtime: everything from a bundle's config.json to the exec in the
container and back, behind runc's command line.

  commands.py        the verbs and their options
  config.py          validation of config.json (the spec's schema, by hand)
  planner.py         config -> plan: the ordered primitive operations
  plan.py            the plan's wire format, read by csrc/shim.c
  launch.py          starts the shim from a sealed memfd and feeds it the plan
  parent.py          spawn and reap: here, or by the C front-end on the warm path
  nethooks.py        `--net`/`-p` (or their annotations) as hooks to Relay's CLI
  state.py           a container's state directory, status and lock
  cgroups/           v1, v2 and hybrid control groups, one module per seam
  seccomp.py         profiles compiled to BPF by libseccomp (_native, cffi)
  capabilities.py    capability numbers, and what this kernel can apply
  userdb.py          HOME from the container's own /etc/passwd
  hooks.py, terminal.py
  create.py, start.py, run.py, kill.py, delete.py, execute.py, pause.py,
  ps.py, events.py, update.py, listing.py, features.py, spec.py: one per verb

May import: the top-level helpers (errors, fastjson, command).  Must not
import image/ or any other part: the runtime stands alone.
"""
