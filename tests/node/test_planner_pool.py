"""The planner's pool of spares (pool.Pool): how many to fork, during a
burst of calls and once it is over.  A pure function of the calls seen."""

from emergence.node.pool import GROWTH, Pool


def test_an_idle_pool_holds_the_configured_spares():
    assert Pool(3).forks(0, quiet=True) == 3
    assert Pool(3).forks(3, quiet=True) == 0
    assert Pool(0).forks(0, quiet=True) == 1    # a call always finds someone to take it


def test_during_a_burst_only_the_configured_pipeline_is_kept():
    p = Pool(3)
    p.forks(0, quiet=True)
    for have in (8, 5, 3):        # a pool grown by earlier bursts: nothing forked
        p.took()
        assert p.forks(have, quiet=False) == 0
    p.took()
    assert p.forks(2, quiet=False) == 1     # below the pipeline a steady stream needs


def test_after_a_burst_the_pool_grows_by_its_size_up_to_a_cap():
    p = Pool(3)
    for _ in range(5):
        p.took()
    assert p.forks(0, quiet=True) == 3 + 5
    for _ in range(100):
        p.took()
    assert p.forks(0, quiet=True) == GROWTH * 3
    assert p.forks(GROWTH * 3, quiet=True) == 0


def test_the_pool_shrinks_back_when_bursts_get_smaller():
    from emergence.node.pool import BURSTS
    p = Pool(3)
    for _ in range(6):
        p.took()
    p.forks(0, quiet=True)
    assert p.target() == 9
    for _ in range(BURSTS):          # later bursts of one call each
        p.took()
        p.forks(9, quiet=True)
    assert p.target() == 4


def test_after_a_long_quiet_the_pool_forgets_its_bursts():
    p = Pool(3)
    for _ in range(6):
        p.took()
    assert p.forks(0, quiet=True) == 9
    assert p.trims(9) == 6          # down to the configured spares
    assert p.target() == 3 and p.forks(3, quiet=True) == 0
    assert Pool(3).trims(2) == 0    # never below them (the pool refills those)
