"""The event recorder's expiry keeps one entry per live Event, however often the Event is rewritten."""

from __future__ import annotations

import asyncio

from labkit.sandbox.events import EVENTS, EventRecorder
from labkit.sandbox.network import AddressPool
from labkit.sandbox.registry import Registry
from labkit.sandbox.store import Store, WatchEvent


def test_repeats_do_not_grow_the_expiry_queue_and_the_last_write_counts() -> None:
    async def scenario() -> tuple[int, int, int]:
        store = Store()
        registry = Registry(store, AddressPool(["127.70.10.11"]))
        registry.create_initial_namespaces()
        recorder = EventRecorder(registry, ttl=0.4)
        pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u1"}}
        gone = asyncio.Event()

        def on_change(ev: WatchEvent) -> None:
            if ev.resource is EVENTS and ev.type == "DELETED" and not store.list(EVENTS):
                gone.set()

        store.subscribe((EVENTS,), on_change)
        for _ in range(500):
            recorder.record(pod, "Warning", "BackOff", "Back-off restarting failed container", component="kubelet")
        queued = len(recorder._heap)
        await asyncio.sleep(0.3)
        recorder.record(pod, "Warning", "BackOff", "Back-off restarting failed container", component="kubelet")
        await asyncio.sleep(0.2)  # past the first write's deadline, not the last one's
        alive = len(store.list(EVENTS))
        count = int(store.list(EVENTS)[0]["count"]) if alive else 0
        await asyncio.wait_for(gone.wait(), 5)
        recorder.close()
        assert not recorder._heap and not recorder._deadline and not recorder._seen
        return queued, alive, count

    assert asyncio.run(scenario()) == (1, 1, 501)
