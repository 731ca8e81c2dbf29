"""Run one function over a list of items on every core, in forked processes.

The items are split into one share a core, balanced by weight (largest first,
each to the lightest share).  The calling process works through the first
share itself while one forked child a share does the rest and pickles its
results back through a pipe.  Nothing is imported or started beyond `os.fork`:
a build at N = 1,000 has about 0.1 s of parsing to share, and a process pool
would cost a good part of that to start.

A child's trouble never changes a result: an item whose call raised in the
child, or whose result cannot be pickled (too deep), and every item of a child
that died, is run again in the caller, where its exception (if any) is raised
as usual.
"""

from __future__ import annotations

import heapq
import os
import pickle
import signal
from collections.abc import Callable, Sequence
from typing import BinaryIO, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

# Below this much weight (bytes of source) a second process costs more than it saves
# (measured: ~2 ms to fork and to pickle results back, against ~0.5 ms a KB of parse);
# nor is it worth it when one item outweighs the rest three to one.
MIN_WEIGHT_TO_FORK = 64 * 1024
MAX_SHARE_TO_FORK = 0.75
_REDO = b""  # in a child's answer: "run this item again in the caller"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def shares(weights: Sequence[int], count: int) -> list[list[int]]:
    """The indices of `weights` in `count` shares of nearly equal total weight, each in order."""
    split: list[list[int]] = [[] for _ in range(count)]
    lightest = [(0, share) for share in range(count)]
    for index in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        load, share = heapq.heappop(lightest)
        split[share].append(index)
        heapq.heappush(lightest, (load + weights[index], share))
    return [sorted(share) for share in split if share]


def map_forked(
    call: Callable[[Item, bool], Result],
    items: Sequence[Item],
    weights: Sequence[int],
) -> list[Result]:
    """`[call(item, False) for item in items]`, spread over the usable cores.

    `call`'s second argument says whether its result will be pickled back from
    a child (it may then return a cheaper form to pickle).
    """
    cores = min(usable_cores(), len(items))
    total = sum(weights)
    split = shares(weights, cores) if cores > 1 and hasattr(os, "fork") else []
    heaviest = max((sum(weights[i] for i in share) for share in split), default=total)
    if len(split) < 2 or total < MIN_WEIGHT_TO_FORK or heaviest > total * MAX_SHARE_TO_FORK:
        return [call(item, False) for item in items]
    own, *others = split
    children: dict[int, tuple[BinaryIO, list[int]]] = {}  # pid: (pipe, item indices)
    results: dict[int, Result] = {}
    try:
        for share in others:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: answer, then leave without running any exit handler
                status = 1
                try:
                    os.close(read_end)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    _answer(call, [items[i] for i in share], write_end)
                    status = 0
                finally:
                    os._exit(status)
            os.close(write_end)
            children[pid] = (open(read_end, "rb"), share)  # noqa: SIM115 (closed below)
        for index in own:
            results[index] = call(items[index], False)
        while children:
            pid = next(iter(children))
            pipe, share = children[pid]
            with pipe:
                data = pipe.read()
            del children[pid]
            _, status = os.waitpid(pid, 0)
            for index, answer in zip(share, _answers(data, status, len(share)), strict=True):
                if answer != _REDO:
                    results[index] = pickle.loads(answer)
    finally:
        for pid, (pipe, _) in children.items():  # the caller was interrupted or raised
            pipe.close()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return [results[i] if i in results else call(item, False) for i, item in enumerate(items)]


def _answer(call: Callable[[Item, bool], object], items: list[Item], write_end: int) -> None:
    """In a child: each item's pickled result, or _REDO, framed as one pickled list."""
    answers = []
    for item in items:
        try:
            answers.append(pickle.dumps(call(item, True), pickle.HIGHEST_PROTOCOL))
        except Exception:  # (RecursionError included) the caller runs it and sees why
            answers.append(_REDO)
    with open(write_end, "wb") as pipe:
        pipe.write(pickle.dumps(answers, pickle.HIGHEST_PROTOCOL))


def _answers(data: bytes, status: int, count: int) -> list[bytes]:
    """A child's answers; all _REDO when it died or answered something else."""
    if status == 0:
        try:
            answers = pickle.loads(data)
        except Exception:
            answers = None
        if isinstance(answers, list) and len(answers) == count:
            return answers
    return [_REDO] * count
