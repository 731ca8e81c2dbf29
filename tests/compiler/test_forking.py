"""`oneiricc.forking.map_forked`: the results of a plain loop, whatever the children do."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oneiricc._build import forking

HEAVY = forking.MIN_WEIGHT_TO_FORK  # one item's weight: enough to fork for two items


@pytest.fixture(autouse=True)
def three_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fork even on a one-core machine: the outcome must not depend on the cores."""
    monkeypatch.setattr(forking, "usable_cores", lambda: 3)


def where(item: int, forked: bool) -> tuple[int, int, bool]:
    return item * item, os.getpid(), forked


def test_children_do_part_of_the_work_and_results_keep_their_order() -> None:
    results = forking.map_forked(where, list(range(7)), [HEAVY] * 7)
    assert [square for square, _, _ in results] == [i * i for i in range(7)]
    pids = {pid for _, pid, _ in results}
    assert os.getpid() in pids
    assert len(pids) == 3
    assert all(forked == (pid != os.getpid()) for _, pid, forked in results)


@pytest.mark.parametrize(
    "weights",
    [[1, 1], [HEAVY * 4, HEAVY // 2, HEAVY // 2]],  # too light; one item is most of the work
    ids=["light", "lopsided"],
)
def test_work_not_worth_splitting_stays_in_the_caller(weights: list[int]) -> None:
    results = forking.map_forked(where, list(range(len(weights))), weights)
    assert {pid for _, pid, _ in results} == {os.getpid()}


def dies_in_a_child(item: int, forked: bool) -> int:
    if forked:
        os._exit(3)
    return item + 1


def test_a_child_that_dies_has_its_items_run_by_the_caller() -> None:
    assert forking.map_forked(dies_in_a_child, [1, 2, 3, 4], [HEAVY] * 4) == [2, 3, 4, 5]


def unpicklable_in_a_child(item: int, forked: bool) -> object:
    return (lambda: item) if forked else item


def test_a_result_that_cannot_be_sent_back_is_made_again() -> None:
    assert forking.map_forked(unpicklable_in_a_child, [5, 6, 7], [HEAVY] * 3) == [5, 6, 7]


def fails_on_three(item: int, forked: bool) -> int:
    if item == 3:
        raise ValueError(f"item {item}, forked={forked}")
    return item


def test_an_exception_is_raised_in_the_caller_as_a_loop_would() -> None:
    with pytest.raises(ValueError, match="item 3, forked=False"):
        forking.map_forked(fails_on_three, [1, 2, 3, 4, 5, 6], [HEAVY] * 6)
    assert not _children()


def _children() -> list[str]:
    """Processes whose parent is this one (none may be left behind, zombies included)."""
    mine = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == mine:
                found.append(pid)
    return found


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(0, 10**6), max_size=30), count=st.integers(1, 4))
def test_shares_split_every_index_once_and_balance_within_the_largest(
    weights: list[int], count: int
) -> None:
    split = forking.shares(weights, count)
    assert sorted(i for share in split for i in share) == list(range(len(weights)))
    assert all(share == sorted(share) for share in split)
    totals = [sum(weights[i] for i in share) for share in split]
    if len(totals) > 1:
        assert max(totals) - min(totals) <= max(weights)
