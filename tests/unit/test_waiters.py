"""Parked push requests: deadline, cancel, shutdown, overload, sharing (trio's autojump clock)."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
import trio
import trio.testing

from pusher_trio.control.jsonrpc import Cancelled, Overloaded, PushRejected, ShuttingDown, Timeout
from pusher_trio.waiters import Registration, Waiters


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_wait_times_out_at_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    waiters = Waiters()
    start = trio.current_time()
    with pytest.raises(Timeout):
        await waiters.wait_for_registration("alice@example.com", "c1", deadline=start + 20)
    assert trio.current_time() - start == pytest.approx(20)
    assert waiters.waiting == 0
    assert waiters.statistics()["left_waiting"] == 1


async def test_registration_wakes_every_wait_of_the_aor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = FakeClock()
    waiters = Waiters(clock=clock)
    results: dict[str, Registration] = {}

    async def call(call_id: str, aor: str) -> None:
        results[call_id] = await waiters.wait_for_registration(aor, call_id)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "c1", "alice@example.com")
        nursery.start_soon(call, "c2", "alice@example.com")
        nursery.start_soon(call, "c3", "bob@example.com")
        await trio.testing.wait_all_tasks_blocked()
        assert waiters.waiting == 3
        assert waiters.notify_registered("alice@example.com", "sip:alice@10.0.0.1", 1001.0) == 2
        await trio.testing.wait_all_tasks_blocked()
        assert set(results) == {"c1", "c2"}
        assert results["c1"].contact == "sip:alice@10.0.0.1"
        assert waiters.waiting == 1
        assert waiters.notify_registered("bob@example.com", "sip:bob@h", 1001.0) == 1
    assert results["c3"].aor == "bob@example.com"
    assert waiters.waiting == 0
    assert waiters.group("alice@example.com") is None


async def test_registration_seen_before_the_request_was_accepted_does_not_count() -> None:
    clock = FakeClock(1000.0)
    waiters = Waiters(clock=clock)
    with waiters.park("alice@example.com", "c1") as w:
        assert waiters.notify_registered("alice@example.com", "sip:old", 999.5) == 0
        assert not w.ended
        assert waiters.notify_registered("alice@example.com", "sip:new", 1000.2) == 1
        registration = await waiters.wait(w)
    assert registration.contact == "sip:new"


async def test_cancel_ends_only_that_call(autojump_clock: trio.testing.MockClock) -> None:
    waiters = Waiters()
    outcomes: dict[str, object] = {}

    async def call(call_id: str) -> None:
        try:
            outcomes[call_id] = await waiters.wait_for_registration(
                "alice@example.com", call_id, deadline=trio.current_time() + 30
            )
        except (Cancelled, Timeout) as exc:
            outcomes[call_id] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "c1")
        nursery.start_soon(call, "c2")
        await trio.testing.wait_all_tasks_blocked()
        assert waiters.cancel("c1") == 1
        assert waiters.cancel("c1") == 0
        assert waiters.cancel("unknown") == 0
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(outcomes["c1"], Cancelled)
        assert "c2" not in outcomes
        assert waiters.waiting == 1
        await trio.sleep(1)
        waiters.notify_registered("alice@example.com", "sip:a", 10**10)
    assert isinstance(outcomes["c2"], Registration)
    assert waiters.statistics()["cancelled"] == 1


async def test_cancel_ends_every_wait_of_a_forked_call() -> None:
    waiters = Waiters()
    a = waiters.enter("alice@example.com", "fork")
    b = waiters.enter("bob@example.com", "fork")
    assert waiters.cancel("fork") == 2
    for w in (a, b):
        with pytest.raises(Cancelled):
            await waiters.wait(w)
        waiters.leave(w)
    assert waiters.waiting == 0


async def test_shutdown_answers_parked_calls_and_refuses_new_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    waiters = Waiters()
    errors: list[Exception] = []

    async def call(aor: str) -> None:
        try:
            await waiters.wait_for_registration(aor, "", deadline=trio.current_time() + 60)
        except ShuttingDown as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(call, f"u{i}@example.com")
        await trio.testing.wait_all_tasks_blocked()
        assert waiters.shutdown() == 5
    assert len(errors) == 5
    assert all(e.code == -32005 for e in errors)
    assert trio.current_time() < 1  # answered at once, not at the deadline
    with pytest.raises(ShuttingDown):
        waiters.enter("alice@example.com", "late")


async def test_overload_refuses_at_once_and_frees_slots() -> None:
    waiters = Waiters(max_waiting=2)
    first = waiters.enter("a@x", "1")
    waiters.enter("b@x", "2")
    with pytest.raises(Overloaded) as info:
        waiters.enter("c@x", "3")
    assert info.value.code == -32004
    assert waiters.waiting == 2
    waiters.leave(first)
    waiters.leave(first)  # idempotent
    assert waiters.waiting == 1
    assert waiters.enter("c@x", "3").aor == "c@x"
    assert waiters.statistics()["overloaded"] == 1


async def test_group_shares_a_push_and_cancels_it_when_empty(
    autojump_clock: trio.testing.MockClock,
) -> None:
    waiters = Waiters()
    pushes: list[str] = []
    push_cancelled = trio.Event()

    async def shared_push(scope: trio.CancelScope) -> None:
        with scope:
            pushes.append("sent")
            try:
                await trio.sleep_forever()
            finally:
                push_cancelled.set()

    results: list[Registration] = []

    async def call(call_id: str, nursery: trio.Nursery) -> None:
        with waiters.park("alice@example.com", call_id) as w:
            if w.group.shared is None:  # first of the group: push
                w.group.shared = "push-1"
                w.group.scope = trio.CancelScope()
                nursery.start_soon(shared_push, w.group.scope)
            results.append(await waiters.wait(w))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "c1", nursery)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, "c2", nursery)
        await trio.testing.wait_all_tasks_blocked()
        group = waiters.group("alice@example.com")
        assert group is not None
        assert len(group.waits) == 2
        assert pushes == ["sent"]
        waiters.notify_registered("alice@example.com", "sip:a", 10**10)
    assert len(results) == 2
    assert push_cancelled.is_set()
    assert waiters.group("alice@example.com") is None


async def test_fail_ends_the_group_with_the_error() -> None:
    waiters = Waiters()
    a = waiters.enter("alice@example.com", "c1")
    b = waiters.enter("alice@example.com", "c2")
    other = waiters.enter("bob@example.com", "c3")
    assert waiters.fail("alice@example.com", PushRejected(data={"pushes": []})) == 2
    for w in (a, b):
        with pytest.raises(PushRejected):
            await waiters.wait(w)
    assert not other.ended
    assert waiters.waiting == 1


async def test_memory_per_waiting_request_is_small() -> None:
    """Target: ≤ 10 KiB per waiting request at 10,000 waiting (a task each, as the server has)."""
    count = 10_000
    waiters = Waiters(max_waiting=count)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(
                    waiters.wait_for_registration, f"user{i}@example.com", f"call-{i}"
                )
            await trio.testing.wait_all_tasks_blocked()
            assert waiters.waiting == count
            per_wait = (tracemalloc.get_traced_memory()[0] - before) / count
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    print(f"waiters: {per_wait:.0f} bytes per waiting task")
    assert per_wait < 10 * 1024
