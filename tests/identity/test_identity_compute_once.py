"""The shared selection: made once by whichever shard gets there first, read by the others."""

from __future__ import annotations

import json
import os
import threading

import pytest

from gandiff.identity.compute_once import compute_once, publish_dir


def _writer(calls: list, text: str = "made"):
    def compute(staging):
        calls.append(staging)
        (staging / "data.txt").write_text(text)
        (staging / "done.json").write_text("{}")
    return compute


def _leftovers(parent, final):
    return sorted(p.name for p in parent.iterdir() if p.name != final.name)


def test_first_call_computes_later_calls_reuse_and_nothing_is_left_behind(tmp_path):
    final, calls = tmp_path / "selection", []
    assert compute_once(final, "done.json", _writer(calls)) is True
    assert compute_once(final, "done.json", _writer(calls, "other")) is False
    assert len(calls) == 1 and (final / "data.txt").read_text() == "made"
    assert _leftovers(tmp_path, final) == []  # no claim, no staging folder


def test_concurrent_publishers_first_wins_and_the_loser_reads_the_winner(tmp_path):
    final = tmp_path / "selection"
    staged = []
    for text in ("first", "second"):
        d = tmp_path / f".staging-{text}"
        d.mkdir()
        _writer([], text)(d)
        staged.append(d)
    assert publish_dir(staged[0], final, "done.json") is True
    assert publish_dir(staged[1], final, "done.json") is False
    assert (final / "data.txt").read_text() == "first" and not staged[1].exists()
    # An incomplete folder (an older writer killed part-way) is replaced, not taken for a selection.
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "data.txt").write_text("half")
    d = tmp_path / ".staging-third"
    d.mkdir()
    _writer([], "third")(d)
    assert publish_dir(d, tmp_path / "partial", "done.json") is True
    assert (tmp_path / "partial" / "data.txt").read_text() == "third"


def test_waits_for_a_live_claimer_and_reuses_its_result(tmp_path):
    final = tmp_path / "selection"
    claim = tmp_path / "selection.claim"
    claim.write_text(json.dumps({"who": "shard 0/4", "pid": 1, "host": "node1", "token": "x"}))
    slept = []

    def sleep(s):  # meanwhile the other shard publishes
        slept.append(s)
        if len(slept) == 2:
            final.mkdir()
            (final / "done.json").write_text("{}")

    def never(_):
        raise AssertionError("the selection was computed twice")

    assert compute_once(final, "done.json", never, sleep=sleep, poll_s=5.0) is False
    assert slept == [5.0, 5.0] and claim.exists()  # the claim is the other shard's: left alone


def test_takes_over_a_claim_whose_heartbeat_stopped(tmp_path):
    final = tmp_path / "selection"
    (tmp_path / "selection.claim").write_text("{}")  # a shard that died while computing
    now = [0.0]

    def sleep(s):
        now[0] += s

    calls = []
    assert compute_once(final, "done.json", _writer(calls), sleep=sleep, clock=lambda: now[0], poll_s=5.0,
                        stale_s=20.0) is True
    assert len(calls) == 1 and now[0] == 20.0 and _leftovers(tmp_path, final) == []


def test_heartbeat_moves_the_claim_while_computing(tmp_path):
    final = tmp_path / "selection"
    claim = tmp_path / "selection.claim"
    renewed = threading.Event()

    def compute(staging):
        first = claim.stat().st_mtime_ns
        os.utime(claim, ns=(first - 10**9, first - 10**9))  # age the claim, then wait for the heartbeat
        for _ in range(2000):  # at most ~2 s; the heartbeat comes within milliseconds
            if claim.stat().st_mtime_ns >= first:
                renewed.set()
                break
            threading.Event().wait(0.001)
        _writer([])(staging)

    assert compute_once(final, "done.json", compute, heartbeat_s=0.005) is True
    assert renewed.is_set() and not claim.exists()


def test_a_failed_computation_leaves_no_claim_staging_or_result(tmp_path):
    final = tmp_path / "selection"

    def broken(staging):
        (staging / "data.txt").write_text("half")
        raise RuntimeError("classifier missing")

    with pytest.raises(RuntimeError, match="classifier missing"):
        compute_once(final, "done.json", broken)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="wrote no done.json"):
        compute_once(final, "done.json", lambda staging: None)
    assert list(tmp_path.iterdir()) == []
