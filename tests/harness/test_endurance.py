"""A short version of tests/bench/endurance.py: hundreds of tool calls over real loopback HTTP with faults."""

from __future__ import annotations

import json

from tests.bench.endurance import run_endurance


def test_short_endurance_run_completes_with_bounded_prompts_and_every_fault_recorded(tmp_path):
    root = tmp_path / "run"
    result = run_endurance(400, root, context_tokens=6000, fault_every=23)
    assert result["stop"] == "finished" and result["steps"] == 401
    assert result["largest_request_tokens"] <= 6000
    assert result["faults"] >= 15 and result["retries"] == result["faults"]  # each fault retried, each recorded
    assert result["compactions"] > 0
    events = [json.loads(line) for line in (root / "trajectory.jsonl").read_text().splitlines()]
    calls = {e["call"]["id"] for e in events if e["type"] == "tool_call"}
    results = [e["call_id"] for e in events if e["type"] == "tool_result"]
    assert sorted(calls) == sorted(results)
    assert [e["seq"] for e in events] == list(range(len(events)))
