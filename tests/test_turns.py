"""The shared model's queue (issue 32): one job at a time, first come first served, each waiting
job told how many are ahead of it, and a job that gives up waiting leaves the queue."""
from __future__ import annotations

import threading
import time

import pytest

from vivid.turns import TurnQueue


def test_jobs_take_turns_in_arrival_order_and_know_their_place():
    queue, order, seen, lock = TurnQueue(), [], {}, threading.Lock()
    release = threading.Event()

    def job(name: str) -> None:
        def waiting(ahead: int) -> None:
            with lock:
                seen.setdefault(name, []).append(ahead)

        with queue.turn(waiting, interval=0.01):
            with lock:
                order.append(name)
            if name == "a":
                release.wait(5)

    threads = []
    for name in "abcd":
        threads.append(threading.Thread(target=job, args=(name,)))
        threads[-1].start()
        time.sleep(0.05)  # arrival order a, b, c, d
    assert queue.busy and queue.waiting == 3
    release.set()
    for t in threads:
        t.join(5)
    assert order == list("abcd")  # no later arrival overtakes an earlier one
    assert seen["b"][0] == 1 and seen["c"][0] == 2 and seen["d"][0] == 3  # places while "a" runs
    assert all(a >= b for name in "bcd" for a, b in zip(seen[name], seen[name][1:]))  # the queue only moves forward
    assert not queue.busy


def test_a_job_that_gives_up_waiting_leaves_the_queue():
    queue, holding, release = TurnQueue(), threading.Event(), threading.Event()

    def holder() -> None:
        with queue.turn():
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)

    def cancel(ahead: int) -> None:
        raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        with queue.turn(cancel, interval=0.01):
            pass
    assert queue.waiting == 0
    release.set()
    thread.join(5)
    with queue.turn():  # the turn is free again at once
        assert queue.busy
