"""A checkpoint is whole or absent: a save killed between any two of its file-system
steps leaves, once stale files are cleaned at the next start, either the previous
checkpoint or the new one for resume to read, never a mix of their files."""
import os
import shutil

import numpy as np
import paddle
import pytest

from paddle_pale.utils import io as ckpt

NAME = "latest"


def _version(value, ema):
    """Files whose every tensor tells which save wrote them."""
    return {"model": {"w": paddle.full([2, 2], float(value))},
            "optimizer": {"moment": paddle.full([3], float(value))},
            "states": {"epoch": value},
            "ema": {"w": paddle.full([2, 2], value + 0.5)} if ema else None}


def _expected(version):
    if version is None:
        return None
    value = version["states"]["epoch"]
    return (value, float(value), float(value),
            None if version["ema"] is None else value + 0.5)


def _save(prefix, version):
    ckpt.save_checkpoint(prefix, version["model"], version["optimizer"], version["states"],
                         version["ema"])


def _seen(prefix):
    """What resume reads at ``prefix``: (epoch, model, optimizer, ema) or None (absent)."""
    files = ckpt.checkpoint_files(prefix)
    if not (os.path.isfile(files[".pdstates"]) and os.path.isfile(files[".pdparams"])):
        with pytest.raises(FileNotFoundError):
            ckpt.load_checkpoint(prefix)
        return None
    loaded = ckpt.load_checkpoint(prefix)
    ema = loaded["ema"]
    return (loaded["states"]["epoch"], float(loaded["model"]["w"][0, 0]),
            float(loaded["optimizer"]["moment"][0]),
            None if ema is None else float(ema["w"][0, 0]))


class KillPoints:
    """Copies the folder before and after every file-system step of a save: each copy is
    what a kill at that moment leaves on disk."""

    STEPS = [(os, "replace"), (os, "rename"), (os, "symlink"), (os, "remove"),
             (os, "unlink"), (os, "rmdir"), (os, "mkdir"), (os, "link"), (paddle, "save"),
             (shutil, "copy2")]

    def __init__(self, folder, into, monkeypatch):
        self.folder, self.into, self.states, self.busy = folder, into, [], False
        self.snapshot()
        for module, name in self.STEPS:
            monkeypatch.setattr(module, name, self._wrap(getattr(module, name)))

    def snapshot(self):
        if self.busy:
            return
        self.busy = True
        try:
            target = os.path.join(self.into, f"kill{len(self.states):03d}")
            shutil.copytree(self.folder, target, symlinks=True)
            self.states.append(target)
        finally:
            self.busy = False

    def _wrap(self, function):
        def step(*args, **kwargs):
            if self.busy:
                return function(*args, **kwargs)
            result = function(*args, **kwargs)
            self.snapshot()
            return result
        return step


def _write_plain(prefix, version):
    """A checkpoint of plain files, as written before saves were versioned, with the
    temporary file a killed save of that time left."""
    for suffix, key in ((".pdparams", "model"), (".pdopt", "optimizer"),
                        (".pdstates", "states"), (".pdema", "ema")):
        if version[key] is not None:
            paddle.save(version[key], prefix + suffix)
    paddle.save(version["model"], prefix + ".pdparams.tmp4242")


SCENARIOS = {
    "first save": (None, _version(2, ema=False)),
    "EMA on, then off": (_version(1, ema=True), _version(2, ema=False)),
    "EMA off, then on": (_version(1, ema=False), _version(2, ema=True)),
    "after a save of plain files": ("plain", _version(2, ema=True)),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch,
                                                                        scenario):
    old, new = SCENARIOS[scenario]
    folder = tmp_path / "out"
    folder.mkdir()
    prefix = str(folder / NAME)
    if old == "plain":
        old = _version(1, ema=False)
        _write_plain(prefix, old)
    elif old is not None:
        _save(prefix, old)
    assert _seen(prefix) == _expected(old)

    kills = KillPoints(str(folder), str(tmp_path / "kills"), monkeypatch)
    _save(prefix, new)
    monkeypatch.undo()
    assert len(kills.states) > 8
    outcomes = []
    for state in kills.states:
        ckpt.remove_stale_files(state)  # the next start
        seen = _seen(os.path.join(state, NAME))
        assert seen in (_expected(old), _expected(new)), (state, seen)
        outcomes.append(seen == _expected(new))
        # nothing stale is left: the live save's directory and the names users read
        entries = set(os.listdir(state))
        versions = [e for e in entries if e.startswith(f".{NAME}.ckpt.")]
        assert len(versions) <= 1, entries
        assert not [e for e in entries if ".tmp" in e], entries
    # the kills go from the old checkpoint to the new one, switching once
    assert outcomes == sorted(outcomes) and outcomes[-1] and not outcomes[0]
    assert _seen(prefix) == _expected(new)


def test_checkpoint_files_are_the_plain_names_users_know(tmp_path):
    prefix = str(tmp_path / NAME)
    _save(prefix, _version(1, ema=True))
    _save(prefix, _version(2, ema=False))
    assert sorted(p for p in os.listdir(tmp_path) if not p.startswith(".")) == [
        "latest.pdopt", "latest.pdparams", "latest.pdstates"]
    np.testing.assert_array_equal(paddle.load(prefix + ".pdparams")["w"].numpy(),
                                  np.full([2, 2], 2.0, "float32"))
    # a checkpoint file's name is accepted as its prefix
    assert ckpt.load_checkpoint(prefix + ".pdparams")["states"]["epoch"] == 2
    assert ckpt.read_states(prefix + ".pdstates") == {"epoch": 2}


def test_private_generators_of_both_kinds_round_trip_through_the_rng_record():
    """The trainer's own generators (Mixup's numpy RandomState, the batch erasing's
    Python Random) are recorded as numbers and restored to the same streams."""
    import random

    from paddle_pale.engine.checkpoint import capture_rng_state, restore_rng_state
    generators = {"erasing": random.Random(3), "mixup": np.random.RandomState(4)}
    state = capture_rng_state(generators)
    first = ([generators["erasing"].random() for _ in range(3)],
             generators["mixup"].rand(3).tolist())
    assert restore_rng_state(state, generators)
    assert ([generators["erasing"].random() for _ in range(3)],
            generators["mixup"].rand(3).tolist()) == first
