"""Runs never collide: a held limit turns a second holder away (if_busy=skip) or makes it wait, and a
free one is always taken, on the first try, however slowly the API answers."""

from __future__ import annotations

import threading
import time

import pytest

from tasks.locks import exclusive, limit_name


def test_skip_when_held_take_when_free_and_wait_for_release(prefect_harness):
    from prefect import flow

    name = limit_name("train", "locks-test")
    events: list[str] = []

    @flow
    def holder(release: threading.Event, held: threading.Event):
        with exclusive(name) as got:
            events.append(f"holder:{got}")
            held.set()
            release.wait(60)

    @flow
    def contender(wait: bool):
        with exclusive(name, wait=wait) as got:
            events.append(f"contender(wait={wait}):{got}")

    release, held = threading.Event(), threading.Event()
    first = threading.Thread(target=holder, args=(release, held))
    first.start()
    assert held.wait(120), "the first flow never got the free limit"

    contender(wait=False)  # held elsewhere: turned away at once
    assert events == ["holder:True", "contender(wait=False):False"]

    waiter = threading.Thread(target=contender, args=(True,))
    waiter.start()
    time.sleep(2)
    assert waiter.is_alive()  # waiting for the holder, not skipping
    release.set()
    first.join(60)
    waiter.join(60)
    assert events[-1] == "contender(wait=True):True"

    contender(wait=False)  # free again: taken on the only attempt
    assert events[-1] == "contender(wait=False):True"


def test_an_api_error_is_not_mistaken_for_busy(prefect_harness, monkeypatch):
    """Only HTTP 423 (the slot is taken) means skip; anything else reaches the caller."""
    import prefect.concurrency.sync as sync
    from prefect import flow

    def broken(*args, **kwargs):
        raise RuntimeError("the Prefect API is unreachable")

    monkeypatch.setattr(sync, "concurrency", broken)

    @flow
    def contender():
        with exclusive(limit_name("train", "locks-broken"), wait=False):
            pass

    with pytest.raises(RuntimeError, match="unreachable"):
        contender()
