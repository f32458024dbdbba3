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

__all__ = ["SUFFIXES", "save_checkpoint", "load_checkpoint", "checkpoint_exists",
           "capture_rng_state", "restore_rng_state"]

logger = logging.getLogger("paddle_pale")

SUFFIXES = (".pdparams", ".pdopt", ".pdema", ".pdstates")


def capture_rng_state():
    """Python, numpy and paddle RNG states as a text blob (paddle.save keeps strings)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "paddle": paddle.get_rng_state()}
    return base64.b64encode(pickle.dumps(state)).decode("ascii")


def restore_rng_state(blob):
    state = pickle.loads(base64.b64decode(blob))
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])


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
