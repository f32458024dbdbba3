"""What the trainer adds to a checkpoint beyond the files of :mod:`paddle_pale.utils.io`:
the random-number states of every rank, and optimizer state keyed by state-dict names
(Paddle keys it by generated parameter names, which differ between processes)."""
import base64
import pickle
import random

import numpy as np
import paddle

__all__ = ["optimizer_state_by_structured_name", "optimizer_state_by_param_name",
           "capture_rng_state", "restore_rng_state"]


def capture_rng_state(generators=None):
    """Python, numpy and paddle RNG states, plus those of ``generators`` (name ->
    numpy RandomState), as a text blob (paddle.save keeps strings)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "paddle": paddle.get_rng_state(),
             "generators": {name: g.get_state() for name, g in (generators or {}).items()}}
    return base64.b64encode(pickle.dumps(state)).decode("ascii")


def restore_rng_state(blob, generators=None):
    state = pickle.loads(base64.b64decode(blob))
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])
    for name, generator in (generators or {}).items():
        if name in state["generators"]:
            generator.set_state(state["generators"][name])


def _rename_keys(state, renames):
    """Rename keys ``<old>_<accumulator>`` -> ``<new>_<accumulator>`` (and the keys of
    ``master_weights``); other keys (``LR_Scheduler``) pass unchanged."""
    olds = sorted(renames, key=len, reverse=True)  # "linear_1" must not match "linear_10"

    def rename(key):
        for old in olds:
            if key == old or key.startswith(old + "_"):
                return renames[old] + key[len(old):]
        return key
    renamed = {}
    for key, value in state.items():
        if key == "master_weights" and isinstance(value, dict):
            renamed[key] = {rename(k): v for k, v in value.items()}
        else:
            renamed[rename(key)] = value
    return renamed


def optimizer_state_by_structured_name(optimizer_state, model):
    """Paddle keys optimizer state by generated parameter names (``linear_3.w_0``), which
    depend on how many layers a process built before; key it by ``state_dict`` names."""
    return _rename_keys(optimizer_state, {p.name: n for n, p in model.named_parameters()})


def optimizer_state_by_param_name(optimizer_state, model):
    """Inverse of :func:`optimizer_state_by_structured_name` for this process's model."""
    return _rename_keys(optimizer_state, {n: p.name for n, p in model.named_parameters()})
