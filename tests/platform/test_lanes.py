"""receiver.platform.lanes: the threads that run the app on requests already in memory. Webhook requests go
first, other requests take two threads at most, and a lane says it is full before a flood piles up."""
from __future__ import annotations

import threading
import time


def test_webhooks_are_run_before_other_requests_and_others_take_few_threads():
    from receiver.platform.lanes import Lanes

    lanes = Lanes(4)
    gate, order, running, most = threading.Event(), [], [], []
    lock = threading.Lock()

    def job(name):
        def run():
            with lock:
                running.append(name)
                most.append(sum(1 for n in running if n.startswith("other")))
            gate.wait(5)
            with lock:
                running.remove(name)
                order.append(name)
        return run

    done = threading.Semaphore(0)
    for n in range(6):
        lanes.submit(False, job(f"other-{n}"), lambda *_: done.release())
    time.sleep(0.2)  # two others run; the rest wait for them
    for n in range(3):
        lanes.submit(True, job(f"webhook-{n}"), lambda *_: done.release())
    time.sleep(0.2)
    assert sorted(running) == ["other-0", "other-1", "webhook-0", "webhook-1"]  # others never take a third thread
    gate.set()
    for _ in range(9):
        assert done.acquire(timeout=5)
    lanes.stop()
    assert max(most) == 2
    assert order.index("webhook-2") < order.index("other-3")  # a waiting webhook goes before waiting others


def test_a_lane_says_it_is_full_before_a_flood_piles_up():
    from receiver.platform.lanes import OTHERS_QUEUED, URGENT_QUEUED, Lanes

    lanes = Lanes(2)
    gate = threading.Event()
    for _ in range(2 + lanes.max_others * OTHERS_QUEUED):
        lanes.submit(False, lambda: gate.wait(5), lambda *_: None)
    time.sleep(0.1)
    assert lanes.full(False) and not lanes.full(True)
    for _ in range(2 * URGENT_QUEUED + 2):
        lanes.submit(True, lambda: gate.wait(5), lambda *_: None)
    assert lanes.full(True)
    gate.set()
    lanes.stop()
