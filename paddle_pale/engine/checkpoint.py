"""Checkpoints: ``PREFIX.pdparams`` (plain model state dict), ``.pdopt`` (optimizer),
``.pdema`` (EMA weights, when EMA is on), ``.pdstates`` (epoch, metrics, arch, class
names, preprocessing and everything resume needs).

A checkpoint is whole or absent. The files of one save are written into a fresh hidden
directory beside them, ``.NAME.ckpt.XXXXXXXX``, and become the checkpoint by one atomic
rename: the symbolic link ``.NAME.ckpt`` is replaced by one pointing at the new
directory. The paths users name (``NAME.pdparams``, ...) are fixed links through
``.NAME.ckpt``, so whenever a save is killed every one of them shows the previous save,
or every one shows the new one. What a killed save leaves behind (its unfinished
directory, a superseded one, a temporary link) is removed by :func:`remove_stale_files`
when training starts again. Checkpoints of plain files (written before this scheme) are
taken over by hard links on their next save, again without a moment of mixed files.
"""
import base64
import logging
import os
import pickle
import random
import re
import shutil
import tempfile

import numpy as np
import paddle

__all__ = ["SUFFIXES", "strip_suffix", "optimizer_state_by_structured_name",
           "optimizer_state_by_param_name", "save_checkpoint", "load_checkpoint",
           "checkpoint_exists", "checkpoint_files", "read_states", "remove_stale_files",
           "capture_rng_state", "restore_rng_state"]

logger = logging.getLogger("paddle_pale")

SUFFIXES = (".pdparams", ".pdopt", ".pdema", ".pdstates")
# temporary names: the pre-versioning ".pdparams.tmpPID" files and our temporary links
_TEMPORARY = re.compile(r"\.tmp\d+$")
# .NAME.ckpt.VERSION: a save's directory, or a temporary entry of NAME's switch
_VERSION = re.compile(r"^\.(?P<name>.+)\.ckpt\.(?P<version>[^.]+)$")
_CURRENT = re.compile(r"^\.(?P<name>.+)\.ckpt$")


def strip_suffix(path):
    """``P`` from ``P`` or any checkpoint file ``P.pdparams``, ``P.pdstates``, ..."""
    path = os.fspath(path)
    for suffix in SUFFIXES:
        if path.endswith(suffix):
            return path[:-len(suffix)]
    return path


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


def _current_link(folder, name):
    return os.path.join(folder, f".{name}.ckpt")


def _fsync(path):
    """Flush a file or directory to disk (a power cut must not undo a finished save)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_link(target, link):
    """Make ``link`` a symbolic link to ``target`` in one atomic rename."""
    temporary = f"{link}.tmp{os.getpid()}"
    if os.path.lexists(temporary):
        os.remove(temporary)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def _new_version(folder, name):
    return tempfile.mkdtemp(prefix=f".{name}.ckpt.", dir=folder)


def _switch(folder, name, version):
    """Make ``version`` the live save of ``name``; -> the directory it replaced, or None."""
    current = _current_link(folder, name)
    previous = os.path.realpath(current) if os.path.islink(current) else None
    _replace_link(os.path.basename(version), current)
    _fsync(folder)
    return previous if previous and os.path.isdir(previous) else None


def _link_files(folder, name, suffixes):
    """``NAME.suffix`` -> ``.NAME.ckpt/NAME.suffix`` for each suffix (made once, then kept)."""
    for suffix in suffixes:
        path = os.path.join(folder, name + suffix)
        target = os.path.join(f".{name}.ckpt", name + suffix)
        if os.path.islink(path) and os.readlink(path) == target:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            raise IsADirectoryError(f"cannot write checkpoint file {path!r}: a directory "
                                    f"is in the way")
        _replace_link(target, path)


def _remove_dangling_links(folder, name):
    for suffix in SUFFIXES:
        path = os.path.join(folder, name + suffix)
        if os.path.islink(path) and not os.path.exists(path):
            os.remove(path)


def _adopt_plain_files(folder, name):
    """Turn a checkpoint of plain files (pre-versioning) into a versioned one holding the
    same bytes (hard links, else copies); at every moment each path shows the old file."""
    paths = [os.path.join(folder, name + suffix) for suffix in SUFFIXES]
    if not any(os.path.isfile(p) and not os.path.islink(p) for p in paths):
        return
    version = _new_version(folder, name)
    present = []
    for suffix, path in zip(SUFFIXES, paths):
        if os.path.isfile(path):
            copy = os.path.join(version, name + suffix)
            try:
                os.link(os.path.realpath(path), copy)
            except OSError:
                shutil.copy2(path, copy)
            present.append(suffix)
    _fsync(version)
    previous = _switch(folder, name, version)
    _link_files(folder, name, present)
    _fsync(folder)
    if previous:
        shutil.rmtree(previous, ignore_errors=True)


def save_checkpoint(prefix, model_state, optimizer_state, states, ema_state=None):
    """Write checkpoint ``prefix`` whole (see the module doc); ``states`` is a dict."""
    folder, name = os.path.split(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    _adopt_plain_files(folder, name)
    parts = [(".pdparams", model_state), (".pdopt", optimizer_state)]
    if ema_state is not None:
        parts.append((".pdema", ema_state))
    parts.append((".pdstates", states))
    version = _new_version(folder, name)
    try:
        for suffix, obj in parts:
            path = os.path.join(version, name + suffix)
            paddle.save(obj, path)
            _fsync(path)
        _fsync(version)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    # links first: until the switch they show the previous save (or nothing)
    _link_files(folder, name, [suffix for suffix, _ in parts])
    previous = _switch(folder, name, version)  # the one atomic step
    _remove_dangling_links(folder, name)  # e.g. .pdema when EMA is now off
    if previous:
        shutil.rmtree(previous, ignore_errors=True)
    return prefix


def remove_stale_files(folder):
    """Remove what killed saves left in ``folder``: save directories that are not live,
    temporary links and ``*.tmpPID`` files, links to nothing. -> names removed."""
    if not os.path.isdir(folder):
        return []
    entries = sorted(os.listdir(folder))
    live = {}
    for entry in entries:
        match = _CURRENT.match(entry)
        path = os.path.join(folder, entry)
        if match and os.path.islink(path):
            live[match.group("name")] = os.path.basename(os.readlink(path))
    removed = []
    for entry in entries:
        path = os.path.join(folder, entry)
        match = _VERSION.match(entry)
        if match and live.get(match.group("name")) == entry:
            continue
        stale_version = match is not None
        temporary = _TEMPORARY.search(entry) is not None and any(
            marker in entry for marker in SUFFIXES + (".ckpt",))
        dangling = (entry.endswith(SUFFIXES) and os.path.islink(path)
                    and not os.path.exists(path))
        if not (stale_version or temporary or dangling):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed.append(entry)
    if removed:
        logger.info("removed leftovers of interrupted saves in %s: %s", folder,
                    ", ".join(removed))
    return removed


def checkpoint_files(prefix):
    """``{suffix: path}`` of checkpoint ``prefix`` (``P`` or ``P.pdparams``), all from one
    save: read through the live save directory, so a save that switches meanwhile
    cannot mix files."""
    prefix = strip_suffix(prefix)
    folder, name = os.path.split(os.path.abspath(prefix))
    current = _current_link(folder, name)
    if os.path.islink(current) and os.path.isdir(current):
        base = os.path.join(os.path.realpath(current), name)
    else:
        base = prefix
    return {suffix: base + suffix for suffix in SUFFIXES}


def checkpoint_exists(prefix):
    files = checkpoint_files(prefix)
    return os.path.isfile(files[".pdstates"]) and os.path.isfile(files[".pdparams"])


def read_states(prefix):
    """The ``.pdstates`` dict of checkpoint ``prefix``, or None when it has none."""
    path = checkpoint_files(prefix)[".pdstates"]
    if not os.path.isfile(path):
        return None
    try:
        states = paddle.load(path)
    except Exception as error:  # paddle raises several types for unreadable files
        raise ValueError(f"cannot read training states {path!r}: {error}") from error
    if not isinstance(states, dict):
        raise ValueError(f"{path!r} should hold a dict of training states, got "
                         f"{type(states).__name__}")
    return states


def load_checkpoint(prefix):
    """-> dict with ``model``, ``optimizer``, ``ema`` (or None) and ``states``.

    ``prefix`` is ``P`` or one of its files (``P.pdparams``)."""
    prefix = strip_suffix(prefix)
    files = checkpoint_files(prefix)
    for suffix in (".pdparams", ".pdstates", ".pdopt"):
        if not os.path.isfile(files[suffix]):
            raise FileNotFoundError(
                f"cannot resume from {prefix!r}: {prefix + suffix!r} is missing (a "
                f"checkpoint prefix is e.g. OUTPUT_DIR/latest)")
    loaded = {}
    for key, suffix in (("model", ".pdparams"), ("optimizer", ".pdopt"),
                        ("states", ".pdstates")):
        try:
            loaded[key] = paddle.load(files[suffix])
        except Exception as error:  # paddle raises several types for unreadable files
            raise ValueError(f"cannot read {prefix + suffix!r}: {error}") from error
    loaded["ema"] = (paddle.load(files[".pdema"]) if os.path.isfile(files[".pdema"])
                     else None)
    return loaded
