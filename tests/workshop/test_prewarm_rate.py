"""The parallelism rule and the ETA of `workshop prewarm` (cscale_extensions.workshop.rate), and
the schedule its workers share: plain functions, no stack."""

from __future__ import annotations

import threading
import time

from cscale_extensions.workshop.prewarm import _Schedule
from cscale_extensions.workshop.rate import StartCost, eta, format_eta, parallelism, spawn_slots


def test_without_a_measurement_the_spawn_limit_less_one_slot_is_the_bound():
    assert spawn_slots(20) == 19 and spawn_slots(1) == 1 and spawn_slots(0) > 10**6
    assert parallelism(remaining=50, cores=2, concurrent_spawn_limit=20) == 19
    assert parallelism(remaining=5, cores=2, concurrent_spawn_limit=20) == 5
    assert parallelism(remaining=0, cores=2, concurrent_spawn_limit=20) == 1


def test_measured_start_keeps_every_core_busy():
    # a 4 s start using 2 CPU-s occupies half a core: 2 cores need 4, with the 1.5 margin 6
    cost = StartCost(wall=4.0, cpu=2.0, pss_mib=150)
    assert parallelism(remaining=50, cores=2, concurrent_spawn_limit=20, cost=cost) == 6
    # twice the cores, twice the starts; a start that is all CPU needs fewer
    assert parallelism(remaining=50, cores=4, concurrent_spawn_limit=20, cost=cost) == 12
    cpu_only = StartCost(wall=3.0, cpu=3.0, pss_mib=150)
    assert parallelism(remaining=50, cores=2, concurrent_spawn_limit=20, cost=cpu_only) == 3
    # not the fixed 4 of the first version: a big machine gets many more, a tiny one fewer
    assert parallelism(remaining=200, cores=32, concurrent_spawn_limit=100, cost=cost) == 96
    assert parallelism(remaining=50, cores=1, concurrent_spawn_limit=20, cost=cpu_only) == 2


def test_measured_parallelism_stays_within_limit_memory_and_work():
    cost = StartCost(wall=10.0, cpu=1.0, pss_mib=200)  # 30 would keep 2 cores busy
    assert parallelism(remaining=50, cores=2, concurrent_spawn_limit=8, cost=cost) == 7
    assert (
        parallelism(
            remaining=50, cores=2, concurrent_spawn_limit=40, cost=cost, mem_available_mib=1000
        )
        == 4  # 80% of 1000 MiB holds 4 servers of 200 MiB
    )
    assert parallelism(remaining=3, cores=2, concurrent_spawn_limit=40, cost=cost) == 3
    tiny = parallelism(
        remaining=50, cores=2, concurrent_spawn_limit=40, cost=cost, mem_available_mib=10
    )
    assert tiny == 1
    # a failed measurement (no CPU seen) falls back to the limit rule, never to 0
    broken = StartCost(wall=0.0, cpu=0.0, pss_mib=0.0)
    assert parallelism(remaining=9, cores=2, concurrent_spawn_limit=4, cost=broken) == 3


def test_eta_at_the_rate_seen_so_far():
    assert eta(0, 20, 5.0) is None
    assert eta(0, 20, 0.0, started_at_rate=0.5) == 40.0  # from the measured first start
    assert eta(5, 20, 10.0) == 30.0  # 5 in 10 s: 15 more take 30 s
    assert eta(5, 20, 10.0, started_at_rate=100) == 30.0  # seen rate wins once there is one
    assert eta(20, 20, 50.0) == 0.0 and eta(25, 20, 50.0) == 0.0
    assert format_eta(None) == "ETA unknown"
    assert format_eta(42.4) == "ETA 42s" and format_eta(113) == "ETA 1m53s"


def test_schedule_hands_out_each_user_once_and_retries_at_their_time():
    sched = _Schedule([(0.0, "a"), (0.0, "b")])
    assert {sched.take(), sched.take()} == {"a", "b"}
    got: list[str | None] = []
    waiter = threading.Thread(target=lambda: got.append(sched.take()))
    waiter.start()  # nothing due, two in flight: it waits
    t = time.monotonic()
    sched.finish(t + 0.3, "a")  # a failed: again in 0.3 s
    waiter.join(5)
    assert got == ["a"] and time.monotonic() - t >= 0.29
    sched.finish(None, "b")
    sched.finish(None, "a")
    assert sched.take() is None  # nothing queued, nothing in flight: the workers stop


def test_schedule_keeps_to_its_limit_until_it_is_raised():
    sched = _Schedule([(0.0, "a"), (0.0, "b"), (0.0, "c")], limit=1)
    assert sched.take() == "a"
    got: list[str | None] = []
    waiter = threading.Thread(target=lambda: got.append(sched.take()))
    waiter.start()
    time.sleep(0.2)
    assert got == []  # b is due, but one start is in flight and the limit is 1
    sched.set_limit(3)  # the measured parallelism
    waiter.join(5)
    assert got == ["b"] and sched.take() == "c"


def test_a_measured_start_is_kept_for_the_next_prewarm_on_this_machine(tmp_path, monkeypatch):
    from cscale_extensions.workshop import rate

    assert rate.load_cost(tmp_path) is None
    cost = StartCost(wall=4.0, cpu=2.5, pss_mib=160)
    rate.save_cost(tmp_path, cost, "workshop capacity")
    assert (tmp_path / rate.COST_FILE).stat().st_mode & 0o777 == 0o600
    assert rate.load_cost(tmp_path) == cost
    assert rate.load_cost(tmp_path, now=time.time() + rate.COST_MAX_AGE + 1) is None  # stale
    monkeypatch.setattr(rate.os, "cpu_count", lambda: 64)  # another machine's cores
    assert rate.load_cost(tmp_path) is None
    monkeypatch.undo()
    (tmp_path / rate.COST_FILE).write_text("{not json")
    assert rate.load_cost(tmp_path) is None


def test_a_start_costs_the_cpu_of_its_exited_subprocesses_too():
    """tree_usage counts what a server's short-lived helpers used (a start's node or git calls
    exit before anyone measures): here a child that burns ~0.3 CPU-s and exits."""
    import subprocess
    import sys

    from cscale_extensions.workshop.rate import tree_usage

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}], check=True)\n"
        "print('done', flush=True)\ntime.sleep(60)"
    )], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert parent.stdout.readline().strip() == "done"
        assert tree_usage(parent.pid)["cpu_s"] >= 0.3  # the child is gone, its CPU is not
    finally:
        parent.kill()
        parent.wait()
