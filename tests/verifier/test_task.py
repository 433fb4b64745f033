"""Loading tasks by name and by path, and the errors a user sees for bad ones."""

from __future__ import annotations

import shutil

import pytest
import torch

from kopt.verifier.task import TaskError, builtin_tasks, load_task


def test_builtin_task_by_name_and_by_path(extend_task):
    assert "extend_attention" in builtin_tasks()
    by_path = load_task(extend_task.root)
    assert by_path.hash == extend_task.hash
    assert [c.id for c in extend_task.config.cases] == [f"C{i}" for i in range(1, 11)]
    assert [w.id for w in extend_task.config.workloads] == [f"W{i}" for i in range(1, 10)]


def test_task_hash_changes_with_any_task_file(extend_task, tmp_path):
    copy = tmp_path / "t"
    shutil.copytree(extend_task.root, copy)
    (copy / "reference.py").write_text((copy / "reference.py").read_text() + "\n# edited\n")
    assert load_task(copy).hash != extend_task.hash


def test_unknown_task_names_the_fix():
    with pytest.raises(TaskError, match="built-in task name .*extend_attention"):
        load_task("no_such_task")


def test_unknown_keys_in_task_toml_are_rejected(extend_task, tmp_path):
    copy = tmp_path / "t"
    shutil.copytree(extend_task.root, copy)
    text = (copy / "task.toml").read_text().replace("default_target = ", "speed_bonus = 2\ndefault_target = ")
    (copy / "task.toml").write_text(text)
    with pytest.raises(TaskError, match="speed_bonus"):
        load_task(copy)


def test_missing_tolerance_for_a_checked_dtype_is_rejected(extend_task, tmp_path):
    copy = tmp_path / "t"
    shutil.copytree(extend_task.root, copy)
    text = (copy / "task.toml").read_text().replace("[tolerance.float16]", "[tolerance.float64]")
    (copy / "task.toml").write_text(text)
    with pytest.raises(TaskError, match="tolerance.float16"):
        load_task(copy)


def test_inputs_are_deterministic_and_discriminating(extend_task):
    ref = extend_task.load_reference()
    params = extend_task.config.cases[0].params  # C1
    a = ref.make_inputs(params, torch.float32, 7)
    b = ref.make_inputs(params, torch.float32, 7)
    c = ref.make_inputs(params, torch.float32, 8)
    assert torch.equal(a["q_extend"], b["q_extend"]) and not torch.equal(a["q_extend"], c["q_extend"])
    # unreferenced pool slots hold NaN; every referenced one is finite
    referenced = torch.zeros(a["k_buffer"].shape[0], dtype=torch.bool)
    referenced[a["kv_indices"].long()] = True
    assert torch.isnan(a["k_buffer"][~referenced]).all() and torch.isfinite(a["k_buffer"][referenced]).all()
    assert (~referenced).sum() >= 16
    # scattered: consecutive prefix positions are not consecutive slots
    idx = a["kv_indices"].long()
    assert (idx[1:] - idx[:-1] != 1).float().mean() > 0.5
    # needle heads: the reference output of those rows is dominated by one value vector
    out = ref.reference(a)["o_extend"]
    assert torch.isfinite(out).all()


def test_custom_mask_case_has_a_row_with_no_extend_key(extend_task):
    ref = extend_task.load_reference()
    params = dict(extend_task.config.cases[4].params, requests=[[0, 8]], request_groups=[])  # P = 0
    inputs = ref.make_inputs(params, torch.float32, 3)
    out = ref.reference(inputs)["o_extend"]
    assert (out.abs().flatten(1).sum(1) == 0).any()  # a fully masked row writes 0


def test_unknown_case_parameter_is_an_error(extend_task):
    ref = extend_task.load_reference()
    with pytest.raises(ValueError, match="unknown case parameters"):
        ref.make_inputs({"heads": [1, 1], "head_dim": 64, "requests": [[1, 1]], "causl": True}, torch.float32, 0)
