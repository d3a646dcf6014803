"""The garbage collector's first-generation threshold while servers run (--gc-threshold)."""

from __future__ import annotations

import gc

import pytest
from nereid import Server


@pytest.fixture
def python_default_threshold():
    saved = gc.get_threshold()
    gc.set_threshold(700, saved[1], saved[2])
    yield 700
    gc.set_threshold(*saved)


async def test_raised_while_servers_run_and_put_back_by_the_last(
    model_repository, python_default_threshold
):
    model_repository.identity("simple", dims="[ 4 ]")
    first = Server(str(model_repository.root), log_info=False)
    second = Server(str(model_repository.root), log_info=False, gc_threshold=50_000)
    await first.start()
    assert gc.get_threshold()[0] == 10_000
    await second.start()  # the setting is the process's: the first server's stays
    assert gc.get_threshold()[0] == 10_000
    await first.stop()
    assert gc.get_threshold()[0] == 10_000  # the second still runs
    await second.stop()
    assert gc.get_threshold()[0] == python_default_threshold


@pytest.mark.parametrize(
    ("option", "before", "while_serving"),
    [(0, 700, 700), (10_000, 50_000, 50_000), (10_000, 0, 0)],
    ids=["option-0-leaves-it", "a-higher-setting-is-kept", "collection-off-stays-off"],
)
async def test_left_alone(
    model_repository, python_default_threshold, option, before, while_serving
):
    model_repository.identity("simple", dims="[ 4 ]")
    gc.set_threshold(before)
    async with Server(str(model_repository.root), log_info=False, gc_threshold=option):
        assert gc.get_threshold()[0] == while_serving
    assert gc.get_threshold()[0] == before
