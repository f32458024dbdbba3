"""What the trainer adds to a checkpoint beyond the files of :mod:`paddle_pale.utils.io`:
the random-number states of every rank, and optimizer state keyed by state-dict names
(Paddle keys it by generated parameter names, which differ between processes)."""
import random

import numpy as np
import paddle

__all__ = ["optimizer_state_by_structured_name", "optimizer_state_by_param_name",
           "capture_rng_state", "restore_rng_state"]


def _numpy_state(state):
    """numpy's ``get_state()`` tuple as plain numbers (key: 624 words)."""
    kind, key, position, has_gauss, cached_gaussian = state
    return {"kind": kind, "key": [int(word) for word in key], "position": int(position),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def _numpy_tuple(state):
    return (state["kind"], np.asarray(state["key"], dtype="uint32"), state["position"],
            state["has_gauss"], state["cached_gaussian"])


def _generator_state(generator):
    """A private generator's state as numbers: a numpy ``RandomState`` or a Python
    ``random.Random`` with numpy's method names (data.random_erasing.SeededRandom)."""
    state = generator.get_state()
    if len(state) == 3:  # random.Random.getstate(): (version, words, gauss_next)
        version, words, gauss_next = state
        return {"kind": "python", "version": version, "words": list(words),
                "gauss_next": gauss_next}
    return _numpy_state(state)


def _set_generator_state(generator, state):
    if state["kind"] == "python":
        generator.set_state((state["version"], tuple(state["words"]), state["gauss_next"]))
    else:
        generator.set_state(_numpy_tuple(state))


def _paddle_states():
    """Each paddle generator state as numbers and its engine's text."""
    states = []
    for generator_state in paddle.get_rng_state():
        device, seed, offset, engine = generator_state.__getstate__()
        states.append({"device": int(device), "seed": int(seed), "offset": int(offset),
                       "engine": bytes(engine).decode("ascii")})
    return states


def _set_paddle_states(states):
    generator_type = type(paddle.get_rng_state()[0])
    restored = []
    for state in states:
        generator_state = generator_type.__new__(generator_type)
        generator_state.__setstate__((state["device"], state["seed"], state["offset"],
                                      list(state["engine"].encode("ascii"))))
        restored.append(generator_state)
    paddle.set_rng_state(restored)


def capture_rng_state(generators=None):
    """Python, numpy and paddle RNG states, plus those of ``generators`` (name ->
    numpy RandomState or Python Random), as numbers, strings and lists: ``paddle.save`` writes them
    without any global, so reading them runs no code (no pickled objects)."""
    version, words, gauss_next = random.getstate()
    return {"python": {"version": version, "words": list(words), "gauss_next": gauss_next},
            "numpy": _numpy_state(np.random.get_state()), "paddle": _paddle_states(),
            "generators": {name: _generator_state(g)
                           for name, g in (generators or {}).items()}}


def restore_rng_state(state, generators=None):
    """Undo :func:`capture_rng_state`. -> False (nothing restored) for a checkpoint of
    the old format (a base64 pickle, which is never unpickled)."""
    if not isinstance(state, dict):
        return False
    python = state["python"]
    random.setstate((python["version"], tuple(python["words"]), python["gauss_next"]))
    np.random.set_state(_numpy_tuple(state["numpy"]))
    _set_paddle_states(state["paddle"])
    for name, generator in (generators or {}).items():
        if name in state["generators"]:
            _set_generator_state(generator, state["generators"][name])
    return True


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
