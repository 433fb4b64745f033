"""Interpreter patches (minimal; replaced by the full module): program order and no write-back."""

from __future__ import annotations


_state = {"order": "forward", "seed": 0, "installed": False, "choice": None}


class InterpreterLimitation(RuntimeError):
    pass


def install(order: str = "forward", seed: int = 0) -> None:
    _state.update(order=order, seed=seed)
    if _state["installed"]:
        return
    import triton.runtime.interpreter as I

    def restore(self, args_dev, args_hst, kwargs, kwargs_hst):
        pass  # on CPU host and device storage are the same memory: nothing to copy back

    I.GridExecutor._restore_args_dev = restore
    original_set = I.interpreter_builder.set_grid_idx
    _state["installed"] = True
    del original_set


def set_autotune_choice(index: int | None) -> None:
    _state["choice"] = index


def autotune_config_counts() -> dict[str, int]:
    return {}
