import pytest


@pytest.fixture
def running(rt):
    """Start a detached container running ARGS; returns its id (removed by `rt`)."""
    def make(args=("sleep", "300"), edit=None):
        b = rt.bundle(list(args), edit=edit)
        cid = rt.new_id("ow")
        rt("run", "--detach", "--bundle", b, cid, check=True)
        return cid
    return make
