"""Fail-fast starts: bad budgets, a missing key or an endpoint that cannot work end `kopt run` with exit 2
and a sentence, before anything is written; and the command line's small texts (--version, defaults)."""

from __future__ import annotations

import socket

import pytest

from kopt.harness import events as ev
from kopt.harness.cli import main
from kopt.harness.panel import describe
from tests.agent.server import Reply, ScriptedServer, openai_error


def start(tmp_path, capsys, *flags: str) -> tuple[int, str]:
    run_dir = tmp_path / "run"
    try:
        code = main(["run", "--task", "rmsnorm", "--device", "cpu", "--run-dir", str(run_dir), *flags])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert not run_dir.exists(), "a start that failed left its run directory behind"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")], "a staging directory was left"
    return code, " ".join(capsys.readouterr().err.split())  # rich wraps long lines


@pytest.mark.parametrize("flags, said", [
    (["--max-evals", "-1"], "argument --max-evals: must be positive, got -1 (omit the flag for no limit)"),
    (["--max-hours", "0"], "argument --max-hours: must be positive"),
    (["--max-tool-calls", "ten"], "argument --max-tool-calls: invalid int value: 'ten'"),
    (["--max-usd", "nan"], "'nan' is not a number"),
    (["--stall-warn", "0"], "argument --stall-warn: must be at least 1"),
    (["--price-in", "-2"], "argument --price-in: must be at least 0"),
])
def test_bad_budgets_are_refused_with_what_is_allowed(tmp_path, capsys, flags, said):
    code, err = start(tmp_path, capsys, *flags)
    assert code == 2 and said in err


def test_a_missing_key_fails_before_the_run_exists(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, err = start(tmp_path, capsys, "--model", "openai:gpt-test")
    assert code == 2 and "no API key: set the environment variable OPENAI_API_KEY" in err
    code, err = start(tmp_path, capsys, "--model", "replay:/nowhere/run")
    assert code == 2 and "replay: /nowhere/run not found" in err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_endpoint_that_cannot_work_fails_at_once_with_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KOPT_TEST_KEY", "sk-test-secret")
    port = free_port()  # nothing listens there
    code, err = start(tmp_path, capsys, "--model", "openai:m", "--base-url", f"http://127.0.0.1:{port}/v1")
    assert code == 2 and f"cannot reach http://127.0.0.1:{port}/v1: connection refused by 127.0.0.1" in err
    code, err = start(tmp_path, capsys, "--model", "openai:m", "--base-url", "http://no-such-host.invalid/v1")
    assert code == 2 and "unknown host 'no-such-host.invalid'" in err and "check --base-url" in err
    bad_key = Reply(401, openai_error("Incorrect API key provided: sk-test-secret", code="invalid_api_key"))
    with ScriptedServer([], gets=bad_key) as server:
        code, err = start(tmp_path, capsys, "--model", "openai:m", "--base-url", server.base_url + "/v1",
                          "--api-key-env", "KOPT_TEST_KEY")
        assert server.get_requests[0].path == "/v1/models"
        assert server.get_requests[0].headers["authorization"] == "Bearer sk-test-secret"
    assert code == 2 and "refused the API key (401)" in err and "check the API key in $KOPT_TEST_KEY" in err
    assert "sk-test-secret" not in err  # the key never shows
    with ScriptedServer([], gets=Reply(401, {"error": "bad"})) as server:  # the Messages API's listing
        monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
        code, err = start(tmp_path, capsys, "--model", "anthropic:claude-test", "--base-url", server.base_url)
        assert server.get_requests[0].path == "/v1/models" and server.get_requests[0].headers["x-api-key"] == "k"
    assert code == 2 and "refused the API key" in err


def test_version_and_defaults_in_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("kopt 0.")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: extend_attention)", "(default: builtin)", "(default: auto)", "(default: 20)",
                  "(default: 5)", "(default: 2.0)", "--max-evals MAX_EVALS evaluations over the whole run (default: "
                  "no limit)"):
        assert shown in text
    with pytest.raises(SystemExit):
        main(["resume", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-evals MAX_EVALS evaluations over the whole run (a new total; default: unchanged)" in text


def test_an_errored_tool_result_is_described_once():
    event = ev.ToolResult(call_id="c", name="edit_file", content="error: old text not found in kernel.py",
                          is_error=True, duration_s=0.0, outcome="error")
    assert describe(event) == "edit_file -> error: old text not found in kernel.py"
