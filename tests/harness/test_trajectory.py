"""The append-only log: torn tails, continuity across writers, atomic small files."""

from __future__ import annotations

import json

import pytest

from kopt.harness import trajectory


def test_append_read_and_continue(tmp_path):
    path = tmp_path / "t.jsonl"
    w = trajectory.Writer(path, fsync=False)
    for i in range(5):
        w.append("tick", i=i)
    w.close()
    events, size = trajectory.read(path)
    assert [e.seq for e in events] == [0, 1, 2, 3, 4] and size == path.stat().st_size
    w2 = trajectory.Writer(path, next_seq=5, elapsed_offset_s=events[-1].elapsed_s + 100, fsync=False)
    w2.append("tick", i=5)
    w2.close()
    events, _ = trajectory.read(path)
    assert [e.seq for e in events] == list(range(6))
    assert events[-1].elapsed_s >= 100 and events[-1].data == {"i": 5}


def test_torn_last_line_is_dropped_and_cut(tmp_path):
    path = tmp_path / "t.jsonl"
    w = trajectory.Writer(path, fsync=False)
    w.append("a")
    w.append("b", text="x" * 100)
    w.close()
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 30])  # a crash in the middle of the last write
    events, size = trajectory.read(path)
    assert [e.type for e in events] == ["a"]
    assert path.stat().st_size == size and path.read_bytes().endswith(b"\n")
    w = trajectory.Writer(path, next_seq=1, fsync=False)
    w.append("c")
    w.close()
    assert [json.loads(line)["type"] for line in path.read_text().splitlines()] == ["a", "c"]


def test_a_corrupt_line_before_the_end_refuses_instead_of_cutting(tmp_path):
    path = tmp_path / "t.jsonl"
    text = ('{"seq":0,"type":"a","time":1,"elapsed_s":0}\nnot json\n'
            '{"seq":2,"type":"c","time":1,"elapsed_s":0}\n')
    path.write_text(text)
    with pytest.raises(trajectory.CorruptTrajectory, match="line 2 of 3"):
        trajectory.read(path)
    assert path.read_text() == text  # nothing after it was thrown away
    assert [e.type for e in trajectory.iter_events(path)] == ["a"]


def test_an_unparsable_last_line_is_a_torn_write(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"seq":0,"type":"a","time":1,"elapsed_s":0}\n{"seq":1,"ty\n')
    events, size = trajectory.read(path)
    assert [e.type for e in events] == ["a"] and path.stat().st_size == size


def test_write_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "state.json"
    trajectory.write_atomic(path, "one")
    trajectory.write_atomic(path, "two")
    assert path.read_text() == "two" and not list(tmp_path.glob(".*.tmp"))
