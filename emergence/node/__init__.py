"""The node: the one long-running process of a host (`emergence node`).

  commands.py   `node start|stop|status|run`
  config.py     /etc/emergence/node.toml, defaults, and a flag for every key
  daemon.py     the process: the warm planner, the HTTP listener, the parts' services
  planner.py    the warm planner that the C front-end (csrc/front.c) asks to run a call:
                its socket, its spares, its life (on demand, by systemd, in the node)
  pool.py       how many spares it keeps forked (calls come in bursts)
  rundir.py     the run dir is the node's own (owner, mode, no symlink, safe parents) or refused
  worker.py     one call in a spare: the front-end's protocol, becoming the caller, the CLI

May import every part (it hosts their services); no part imports it.  Every
verb works without it: the front-end falls back to the cold path.
"""

try:  # written by setup.py: the front-end and the planner must be of one build
    from .._build_id import BUILD_ID
except ImportError:  # a source checkout
    BUILD_ID = "dev"
