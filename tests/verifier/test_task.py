"""Loading tasks by name and by path, and the errors a user sees for bad ones."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from kopt.verifier.task import TaskError, builtin_tasks, load_task


def test_builtin_task_by_name_and_by_path(extend_task):
    assert "extend_attention" in builtin_tasks()
    by_path = load_task(extend_task.root)
    assert by_path.hash == extend_task.hash
    assert [c.id for c in extend_task.config.cases] == [f"C{i}" for i in range(1, 24)]
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
    # the layout rotates with the seed: scattered (seed 0 mod 7) breaks every run, runs16 keeps them
    assert ref.LAYOUTS[7 % len(ref.LAYOUTS)] == "scattered" and ref.LAYOUTS[8 % len(ref.LAYOUTS)] == "runs16"
    scattered = ref.make_inputs(params, torch.float32, 7)["kv_indices"].long()
    assert (scattered[1:] - scattered[:-1] != 1).float().mean() > 0.5
    runs = ref.make_inputs(params, torch.float32, 8)["kv_indices"].long()
    assert (runs[1:] - runs[:-1] == 1).float().mean() > 0.8
    # needle heads: the reference output of those rows is dominated by one value vector
    out = ref.reference(a)["o_extend"]
    assert torch.isfinite(out).all()


def test_custom_mask_case_has_a_row_with_no_extend_key(extend_task):
    ref = extend_task.load_reference()
    params = extend_task.config.cases[4].params  # C5: request 0 has no prefix (P = 0), so its cleared row sees nothing
    assert extend_task.config.cases[4].id == "C5" and params["requests"][0][0] == 0
    inputs = ref.make_inputs(params, torch.float32, 3)
    out = ref.reference(inputs)["o_extend"]
    assert (out.abs().flatten(1).sum(1) == 0).any()  # a fully masked row writes 0


def test_unknown_case_parameter_is_an_error(extend_task):
    ref = extend_task.load_reference()
    with pytest.raises(ValueError, match="unknown case parameters"):
        ref.make_inputs({"heads": [1, 1], "head_dim": 64, "requests": [[1, 1]], "causl": True}, torch.float32, 0)


def test_layouts_and_variants_break_shortcuts_and_keep_shapes(extend_task):
    """Every pool layout comes up by seed; a variant keeps shapes and strides, changes content, moves slots."""
    ref = extend_task.load_reference()
    params = {"heads": [2, 1], "head_dim": 64, "requests": [[100, 5], [90, 3]]}
    seen = set()
    for seed in range(len(ref.LAYOUTS)):
        a = ref.make_inputs(params, torch.float32, seed)
        b = ref.make_inputs(params, torch.float32, seed, variant=1)
        seen.add(ref.LAYOUTS[seed % len(ref.LAYOUTS)])
        for name, t in a.items():
            if isinstance(t, torch.Tensor):
                assert t.shape == b[name].shape and t.stride() == b[name].stride() and t.dtype == b[name].dtype
        assert not torch.equal(a["q_extend"], b["q_extend"])
        moved = (a["kv_indices"] != b["kv_indices"]).sum()
        assert 1 <= int(moved) <= 3
        assert torch.isfinite(ref.reference(b)["o_extend"]).all()  # re-pointed slots hold real keys
        idx = a["kv_indices"].long()
        if ref.LAYOUTS[seed] == "duplicate":
            assert len(set(idx[:100].tolist())) < 100  # one slot referenced twice in a request
    assert seen == set(ref.LAYOUTS)


def test_meta_inputs_have_the_real_shapes(extend_task):
    ref = extend_task.load_reference()
    params = extend_task.config.workloads[0].params
    meta = ref.make_inputs(params, torch.bfloat16, 5, "meta")
    real = ref.make_inputs(dict(params, requests=params["requests"][:1]), torch.bfloat16, 5, "meta")
    assert meta["q_extend"].is_meta and meta["q_extend"].shape == (8 * 256, 32, 128)
    assert real["k_buffer"].shape[0] < meta["k_buffer"].shape[0]
    assert meta["kv_indices"].shape == (8 * 4096,)


def test_holdout_always_has_a_large_window_and_cap_over_a_longer_sequence(extend_task):
    """An independent panel's kernels ignored windows from 512 or 1024 on and were caught only in the draws that
    exceeded their threshold; the third hidden case now draws from the top of the range in every evaluation."""
    ref = extend_task.load_reference()
    for seed in range(40):
        third = ref.holdout_cases(seed, 3)[2]
        (p, e), = third["requests"]
        assert third["sliding_window"] >= 1024 and third["logit_cap"] >= 200, third
        assert p + e > third["sliding_window"] + 300 and third["logit_shift"] >= 4, third


def test_holdout_always_has_an_extend_and_a_batch_as_large_as_the_workloads_checked_in_bf16(extend_task):
    """An independent panel's kernel dropped the extend keys more than 1024 behind a query row from row 1024
    on: only W3, W4, W7 and W9 reach such rows, no case did, and it got `ok`. The fourth hidden case now has
    an extend as long as the longest workload's in a batch as large as theirs, checked in bf16 only (the timed
    dtype: one call, no repeats, to keep the interpreter's evaluation cheap)."""
    from kopt.verifier.evaluate import plan_items
    ref = extend_task.load_reference()
    longest = max(e for w in extend_task.config.workloads for _, e in w.params.get("requests", []))
    batch = max(len(w.params.get("requests", [])) + sum(g["count"] for g in w.params.get("request_groups", []))
                for w in extend_task.config.workloads)
    for seed in range(20):
        fourth = ref.holdout_cases(seed, 4)[3]
        assert max(e for _, e in fourth["requests"]) >= longest == 8192, fourth
        assert len(fourth["requests"]) >= batch == 32 and fourth["dtypes"] == ["bfloat16"], fourth
    items = [i for i in plan_items(extend_task, "cpu", 7) if i["case"] == "hidden-4"]
    assert [(i["dtype"], i["repeat"]) for i in items] == [("bfloat16", False)]
    assert "dtypes" not in items[0]["params"]  # (a planning key: the reference never sees it)
    assert {i["dtype"] for i in plan_items(extend_task, "cpu", 7) if i["case"] == "hidden-1"} == {
        "float32", "float16", "bfloat16"}


def test_the_gpu_checks_a_grid_larger_than_every_workloads_and_the_interpreter_never_runs_it(extend_task):
    """An independent panel's persistent kernel stopped each program after a fixed number of tiles, just past
    W5's: right on every case and workload. The GPU profile's eighth hidden case has more programs than any
    workload in any tiling (BLOCK_M from 16 to 128), real and padding alike; under the interpreter it would
    take minutes, so the CPU's and the simulated device's plans leave it out."""
    import math
    from kopt.verifier.evaluate import plan_items
    ref = extend_task.load_reference()

    def tiles(params: dict, block_m: int) -> tuple[int, int]:  # (programs with rows, programs of the grid)
        lengths = ref._lengths(params, torch.Generator().manual_seed(0))
        widest = params.get("max_len_extend", max(e for _, e in lengths))
        hq = params["heads"][0]
        return (hq * sum(math.ceil(e / block_m) for _, e in lengths), hq * len(lengths) * math.ceil(widest / block_m))

    for secret in range(3):
        gpu = [i for i in plan_items(extend_task, "gpu", secret) if i["case"] == "hidden-8"]
        assert {i["dtype"] for i in gpu} == {"bfloat16"} and "gpu_only" not in gpu[0]["params"]
        for block_m in (16, 32, 64, 128):
            real, grid = tiles(gpu[0]["params"], block_m)
            for w in extend_task.config.workloads:
                w_real, w_grid = tiles(w.params, block_m)
                assert real > w_real and grid > w_grid, (w.id, block_m)
        simulated = {i["case"] for i in plan_items(extend_task, "simulated", secret)}
        assert "hidden-8" not in simulated and "hidden-9" in simulated  # (the GPU profile's, less that one)
        assert not any(len(i["params"]["requests"]) >= 128 and i["params"]["heads"] == [32, 8]
                       for i in plan_items(extend_task, "cpu", secret) if "requests" in i["params"])
    assert len(ref.holdout_cases(1, 9)) == 9 and ref.holdout_cases(1, 9)[7]["gpu_only"]


def test_holdout_always_has_a_long_prefix(extend_task):
    ref = extend_task.load_reference()
    for seed in range(5):
        first = ref.holdout_cases(seed, 3)[0]
        prefixes = [p for p, _ in first["requests"]]
        assert prefixes[0] == 32768 and prefixes[1] in (4096, 8192, 16384) and prefixes[2] % 1024, first


def test_the_long_extend_hidden_case_has_a_pool_past_2_31_elements_that_costs_no_memory(extend_task):
    """An independent panel's kernel computed pool offsets in int32 and got `ok`: no pool passed 2^31 elements.
    The fourth hidden case's pool does (2^25 unreferenced slots of 64 before its own), and the 4 GiB of each
    pool it never references are a hole of the candidate's input file, not memory: the file still holds
    exactly what the reference reads, at the slots' offsets."""
    import os
    from kopt.verifier import arena
    ref = extend_task.load_reference()
    fourth = ref.holdout_cases(5, 4)[3]
    x = ref.make_inputs({k: v for k, v in fourth.items() if k != "dtypes"}, torch.bfloat16, 3)
    pool, slots = x["k_buffer"], x["kv_indices"].long()
    assert pool.numel() > 2 ** 31 and int(slots.max()) * pool.stride(0) >= 2 ** 31
    assert int(slots.min()) >= fourth["slot_base"] > (1 << 25) - 4097
    layout, fd = arena.pack_inputs(x, ["o_extend"])
    try:
        assert os.fstat(fd).st_blocks * 512 < 256 << 20  # what is written, not 8 GiB
        spec = next(s for s in layout.specs if s.name == "k_buffer")
        row_bytes = pool.stride(0) * pool.element_size()
        for slot in (int(slots[0]), int(slots[-1])):
            row = pool[slot].contiguous().view(torch.uint8).numpy().tobytes()
            assert os.pread(fd, row_bytes, spec.offset + slot * row_bytes) == row
        assert os.pread(fd, 64, spec.offset + 4096) == bytes(64)  # an unreferenced slot: zeros
    finally:
        os.close(fd)
    assert arena.zero_prefix(pool[1:]) == 0 and arena.zero_prefix(pool.transpose(1, 2)) == 0  # only as made


def test_the_sink_case_is_nearer_and_shorter_in_the_16_bit_dtypes(extend_task):
    """`by_dtype`: a case's parameters replaced in a dtype. The fifth hidden case is fp32's sink (16 above
    24576-32767 keys: 1e-3 of the mass, fp32's bounds see it) and, in fp16 and bf16, whose bounds are wider, a
    sink 13-14 above 16384-20480 keys. Each dtype's item carries its own parameters and no `by_dtype`."""
    from kopt.verifier.evaluate import plan_items
    for secret in range(4):
        sinks = {i["dtype"]: i["params"] for i in plan_items(extend_task, "cpu", secret) if i["case"] == "hidden-5"}
        assert set(sinks) == {"float32", "float16", "bfloat16"}
        assert sinks["float32"]["sink_logit"] == 16.0 and sinks["float32"]["requests"][0][0] >= 24576
        for dtype in ("float16", "bfloat16"):
            params = sinks[dtype]
            assert params["sink_logit"] in (13.0, 13.5, 14.0) and 16384 <= params["requests"][0][0] <= 20480
            assert params["surge_logit"] == 120.0 and "by_dtype" not in params


def test_hidden_probes_are_drawn_in_the_workloads_regime_sampled_on_cpu_and_whole_on_a_gpu(extend_task):
    """An independent panel's kernel was wrong only where Hkv >= 4, P >= 1024 and 129 <= E <= 255, which no
    case or workload reaches together, and got `ok`. Each evaluation draws hidden probes: each a band of extend
    lengths and a workload's heads (four probes: every band and every workload's heads), three requests of
    nearly one length in its band, one with no prefix, one with 1-1023 keys and one with 1024-8192; on CPU they
    run a sample of their programs in the timed dtype (as the workloads do), on a GPU all of them in every
    dtype; the simulated device, whose interpreter would run them whole, plans none."""
    from kopt.verifier.evaluate import plan_items, probe_items
    cfg = extend_task.config
    workload_heads = {(tuple(w.params["heads"]), w.params["head_dim"]) for w in cfg.workloads}
    drawn = set()
    for secret in range(6):
        probes = [i for i in probe_items(extend_task, secret) if i["hidden"]]
        assert [i["case"] for i in probes] == [f"probe-{n + 1}" for n in range(cfg.cpu.hidden_probes)]
        assert all(i["dtype"] == cfg.gpu.dtypes[0] and i["key"].endswith("/sampled") for i in probes)
        bands, heads = set(), set()
        for item in probes:
            params = item["params"]
            heads.add((tuple(params["heads"]), params["head_dim"]))
            extends = [e for _, e in params["requests"]]
            band = [(lo, hi) for lo, hi in [(1, 16), (17, 128), (129, 256), (257, 1024)] if lo <= extends[0] <= hi]
            assert len(band) == 1 and all(band[0][0] <= e <= band[0][1] for e in extends), params
            assert max(extends) - min(extends) <= 2 * ((band[0][1] - band[0][0] + 1) // 32), params
            bands.add(band[0])
            prefixes = sorted(p for p, _ in params["requests"])
            assert prefixes[0] == 0 and 1 <= prefixes[1] <= 1023 and 1024 <= prefixes[2] <= 8192, params
            drawn.add(json.dumps(params, sort_keys=True))
        assert len(bands) == 4 and heads == workload_heads, probes
        gpu = {(i["case"], i["dtype"]) for i in plan_items(extend_task, "gpu", secret) if i["case"].startswith("probe-")}
        assert gpu == {(f"probe-{n + 1}", d) for n in range(cfg.gpu.hidden_probes) for d in cfg.gpu.dtypes}
        assert not any(i["case"].startswith("probe-") for d in ("cpu", "simulated")
                       for i in plan_items(extend_task, d, secret))
    assert len(drawn) == 6 * cfg.cpu.hidden_probes  # new shapes in every evaluation
