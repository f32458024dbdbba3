"""Checkpoints: ``PREFIX.pdparams`` (plain model state dict), ``.pdopt`` (optimizer),
``.pdema`` (EMA weights, when EMA is on), ``.pdstates`` (epoch, metrics, arch,
preprocessing and everything resume needs), written atomically, ``.pdstates`` last.

A checkpoint is complete when its ``.pdstates`` exists: every file is written to a
temporary name first and only renamed (``os.replace``, atomic on POSIX) once all are
on disk, so a kill mid-save leaves the previous checkpoint readable.
"""
import base64
import logging
import os
import pickle
import random

import numpy as np
import paddle

__all__ = ["SUFFIXES", "optimizer_state_by_structured_name",
           "optimizer_state_by_param_name", "save_checkpoint", "load_checkpoint", "checkpoint_exists",
           "capture_rng_state", "restore_rng_state"]

logger = logging.getLogger("paddle_pale")

SUFFIXES = (".pdparams", ".pdopt", ".pdema", ".pdstates")


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


def save_checkpoint(prefix, model_state, optimizer_state, states, ema_state=None):
    """Write the files of checkpoint ``prefix``; ``states`` is a dict (see module doc)."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    parts = [(".pdparams", model_state), (".pdopt", optimizer_state)]
    if ema_state is not None:
        parts.append((".pdema", ema_state))
    parts.append((".pdstates", states))
    staged = []
    try:
        for suffix, obj in parts:
            temporary = f"{prefix}{suffix}.tmp{os.getpid()}"
            paddle.save(obj, temporary)
            staged.append((temporary, prefix + suffix))
    except BaseException:
        for temporary, _ in staged:
            if os.path.exists(temporary):
                os.remove(temporary)
        raise
    # an older .pdstates must not vouch for a mix of new and old files
    if ema_state is None and os.path.exists(prefix + ".pdema"):
        os.remove(prefix + ".pdema")
    for temporary, final in staged:
        os.replace(temporary, final)
    return prefix


def checkpoint_exists(prefix):
    return os.path.isfile(prefix + ".pdstates") and os.path.isfile(prefix + ".pdparams")


def load_checkpoint(prefix):
    """-> dict with ``model``, ``optimizer``, ``ema`` (or None) and ``states``."""
    for suffix in (".pdparams", ".pdstates", ".pdopt"):
        if not os.path.isfile(prefix + suffix):
            raise FileNotFoundError(
                f"cannot resume from {prefix!r}: {prefix + suffix!r} is missing (a "
                f"checkpoint prefix is e.g. OUTPUT_DIR/latest)")
    loaded = {}
    for key, suffix in (("model", ".pdparams"), ("optimizer", ".pdopt"),
                        ("states", ".pdstates")):
        try:
            loaded[key] = paddle.load(prefix + suffix)
        except Exception as error:  # paddle raises several types for unreadable files
            raise ValueError(f"cannot read {prefix + suffix!r}: {error}") from error
    loaded["ema"] = (paddle.load(prefix + ".pdema") if os.path.isfile(prefix + ".pdema")
                     else None)
    return loaded
