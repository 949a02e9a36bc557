"""How many spares a planner keeps forked: calls come in bursts, and a
fork during a burst takes a core from the burst's own calls."""

import collections

QUIET = 0.05  # s without a call that ends a burst: the pool is refilled only then
BURSTS = 8    # the largest of the last BURSTS bursts sizes the pool ...
GROWTH = 4    # ... up to GROWTH x planner_spares
TRIM = 30.0   # s without a call (half the idle time of a planner that has one):
              # the pool forgets its bursts, and spares above planner_spares go


class Pool:
    """How many spares to fork now.  Calls come in bursts (an engine's
    create, start, state, kill, delete; a pod's containers): a fork and its
    warm-up (~5 ms of CPU, mostly copy-on-write faults) during a burst take
    a core from the burst's own calls.  So during a burst a spare is forked
    only when fewer than WANTED are left (the pipeline a steady stream of
    calls needs: each spare then has a few calls' time to warm up), and the
    rest once the burst is over (QUIET), up to WANTED more than the largest
    of the recent bursts (at most GROWTH x WANTED): the next burst like them
    forks nothing until it is over."""

    def __init__(self, wanted):
        self.wanted = max(1, wanted)
        self.burst = 0
        self.sizes = collections.deque(maxlen=BURSTS)

    def took(self):
        self.burst += 1

    def target(self):
        return min(self.wanted + max(self.sizes, default=0), GROWTH * self.wanted)

    def trims(self, have):
        """After a long quiet: the bursts are forgotten, and how many of HAVE
        spares are to go (down to WANTED)."""
        self.sizes.clear()
        return max(0, have - self.wanted)

    def forks(self, have, quiet):
        if quiet and self.burst:
            self.sizes.append(self.burst)
            self.burst = 0
        return max(0, (self.target() if quiet else self.wanted) - have)
