"""The trusted side of the CPU arena: sealed inputs, in a process whose other threads start children."""

import os
import threading
import time

import torch

from kopt.verifier import arena


def test_inputs_seal_while_other_threads_fork():
    # F_SEAL_WRITE fails with EBUSY while any process maps the memfd writable, and a child forked by
    # another thread inherits the parent's mappings until its exec. The verifier forks children from
    # several threads at once (dtypes in parallel, several evaluations on one executor), so packing must
    # never hold a writable mapping: CI saw 'OSError: [Errno 16] Device or resource busy' on an honest kernel.
    stop = threading.Event()

    def forker():
        while not stop.is_set():
            pid = os.fork()
            if pid == 0:  # the child lives a little while, with whatever the parent had mapped at the fork
                time.sleep(0.002)
                os._exit(0)
            os.waitpid(pid, 0)

    thread = threading.Thread(target=forker, daemon=True)
    thread.start()
    inputs = {"a": torch.randn(256, 1024), "b": torch.randn(64), "n": 3}
    failures = []
    try:
        for _ in range(300):
            try:
                layout, fd = arena.pack_inputs(inputs, [])
                os.close(fd)
            except OSError as exc:
                failures.append(exc)
    finally:
        stop.set()
        thread.join()
    assert not failures, f"{len(failures)} of 300 packings failed: {failures[0]}"


def test_packed_inputs_hold_the_values_and_refuse_writes():
    import fcntl
    import mmap
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # strided: packed as its span
    layout, fd = arena.pack_inputs({"a": a, "k": 5}, [])
    try:
        spec = layout.specs[0]
        with mmap.mmap(fd, layout.size, prot=mmap.PROT_READ) as view:
            raw = torch.frombuffer(bytearray(view[spec.offset:spec.offset + spec.span]), dtype=torch.uint8)
        got = raw.view(torch.float32).as_strided(spec.shape, spec.stride)
        assert torch.equal(got, a) and layout.scalars == {"k": 5}
        assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
        try:
            os.pwrite(fd, b"x", 0)
            raise AssertionError("a sealed input file took a write")
        except PermissionError:
            pass
    finally:
        os.close(fd)
