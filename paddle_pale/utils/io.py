"""Files of weights, training checkpoints and exports: the one place that names their
suffixes, resolves their prefixes, reads them with errors naming the file, and writes
checkpoints whole.

* weights: a ``.pdparams`` state dict, read without running code (``safe_pickle``), or
  a ``.safetensors`` file (``save_safetensors``, ``read_safetensors_metadata``); fitted
  to a model by ``load_weights``, the one loader, strict by default;
* training checkpoints: a prefix ``P`` with ``P.pdparams``, ``P.pdopt``, ``P.pdema`` (EMA
  on) and ``P.pdstates``, written whole or not at all (``save_checkpoint``), read
  without running code (``load_checkpoint``, ``read_states``);
* exports: ``P.json`` + ``P.pdiparams`` (a Paddle Inference program) or other files, with
  a ``P.meta.json`` sidecar (``write_meta``, ``read_meta``).

A checkpoint is whole or absent. The files of one save are written into a fresh hidden
directory beside them, ``.NAME.ckpt.XXXXXXXX``, and become the checkpoint by one atomic
rename: the symbolic link ``.NAME.ckpt`` is replaced by one pointing at the new
directory. The paths users name (``NAME.pdparams``, ...) are fixed links through
``.NAME.ckpt``, so whenever a save is killed every one of them shows the previous save,
or every one shows the new one. What a killed save leaves behind (its unfinished
directory, a superseded one, a temporary link) is removed by :func:`remove_stale_files`
when training starts again. Checkpoints of plain files (written before this scheme) are
taken over by hard links on their next save, again without a moment of mixed files.

Ground layer: imports nothing of the package.
"""
import glob
import json
import logging
import os
import re
import shutil
import tempfile

import paddle

from . import safe_pickle

__all__ = ["CHECKPOINT_SUFFIXES", "META_SUFFIX", "PREPROCESS_KEYS", "PROGRAM_SUFFIXES",
           "strip_suffix",
           "resolve_weights_path", "load_state_dict", "describe_keys", "load_weights",
           "SAFETENSORS_SUFFIX", "save_safetensors", "read_safetensors_metadata",
           "MISMATCH_FLAG", "add_mismatch_flag", "checkpoint_prefix", "save_checkpoint",
           "checkpoint_files", "read_states", "load_checkpoint", "remove_stale_files",
           "refuse_code", "read_json", "write_meta", "read_meta", "export_prefix", "check_writable"]

logger = logging.getLogger("paddle_pale")

MISMATCH_FLAG = "--allow_mismatched_weights"
SAFETENSORS_SUFFIX = ".safetensors"
CHECKPOINT_SUFFIXES = (".pdparams", ".pdopt", ".pdema", ".pdstates")
META_SUFFIX = ".meta.json"  # paddle.jit.save owns NAME.json
# the eval preprocessing an export's meta carries from its checkpoint
PREPROCESS_KEYS = ("input_size", "crop_pct", "mean", "std", "interpolation")
PROGRAM_SUFFIXES = (".json", ".pdiparams")
# temporary names: the pre-versioning ".pdparams.tmpPID" files and our temporary links
_TEMPORARY = re.compile(r"\.tmp\d+$")
# .NAME.ckpt.VERSION: a save's directory, or a temporary entry of NAME's switch
_VERSION = re.compile(r"^\.(?P<name>.+)\.ckpt\.(?P<version>[^.]+)$")
_CURRENT = re.compile(r"^\.(?P<name>.+)\.ckpt$")


def strip_suffix(path, suffixes=CHECKPOINT_SUFFIXES):
    """``P`` from ``P`` or ``P`` + one of ``suffixes`` (the longest that matches: a
    ``.meta.json`` is not read as ``.json``)."""
    path = os.fspath(path)
    for suffix in sorted(suffixes, key=len, reverse=True):
        if path.endswith(suffix):
            return path[:-len(suffix)]
    return path


# ------------------------------------------------------------------------------ weights
def resolve_weights_path(path):
    """Accept ``x.pdparams``, ``x.safetensors`` or a prefix ``x`` of either; raise if
    none exists."""
    path = os.fspath(path)
    for candidate in (path, path + ".pdparams", path + SAFETENSORS_SUFFIX):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"no weights file at {path!r} (nor {path + '.pdparams'!r} or "
                            f"{path + SAFETENSORS_SUFFIX!r})")


def _safetensors(what):
    try:
        import safetensors.paddle
    except ImportError as error:
        raise ImportError(f"{what} needs the safetensors package: pip install "
                          f"safetensors") from error
    return safetensors


def save_safetensors(state, path, metadata=None):
    """Write state dict ``state`` as ``.safetensors`` (plain tensors, no code) with
    ``metadata``: each value JSON-encoded, as the format stores strings only."""
    safetensors = _safetensors(f"writing {path!r}")
    metadata = {key: json.dumps(value, default=_plain) for key, value in
                (metadata or {}).items()}
    safetensors.paddle.save_file(dict(state), path, metadata=metadata)
    return path


def read_safetensors_metadata(path):
    """The metadata :func:`save_safetensors` wrote, JSON-decoded (strings that are not
    JSON stay strings: files written by other tools)."""
    safetensors = _safetensors(f"reading {path!r}")
    try:
        with safetensors.safe_open(path, framework="np") as f:
            raw = f.metadata() or {}
    except Exception as error:  # safetensors raises its own error types
        raise ValueError(f"cannot read weights file {path!r}: {error}") from None

    def decode(value):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return {key: decode(value) for key, value in raw.items()}


def load_state_dict(path):
    """Read a weights file without running code from it: ``.safetensors``, or a
    ``.pdparams`` of ``paddle.save(model.state_dict(), ...)`` (a restricted unpickler)."""
    path = resolve_weights_path(path)
    if path.endswith(SAFETENSORS_SUFFIX):
        safetensors = _safetensors(f"reading {path!r}")
        try:
            return safetensors.paddle.load_file(path, device="cpu")
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(f"cannot read weights file {path!r}: {error}") from None
    state = safe_pickle.load(path, "weights file")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"{path!r} does not hold a state dict (got {type(state).__name__})")
    return state


def describe_keys(keys, limit=20, separator=", "):
    """The first ``limit`` of ``keys`` and how many more: error messages stay a few lines
    long however many tensors a wrong checkpoint gets wrong."""
    keys = list(keys)
    shown = separator.join(keys[:limit])
    return shown + (f"{separator}... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_weights(model, path, strict=True, exact=False, what="the model", hint="",
                 owner_prefixes=(), log=logger):
    """Load weights file ``path`` into ``model``: the one place that fits weights to a
    model and says what did not fit.

    * ``exact=False`` (pretrained weights): the classifier (keys starting with one of
      ``model.classifier_prefixes``, ``norm.*`` and ``head.*`` for the Pale Transformer)
      is left out when the model or the file lacks it, or its shapes differ (another
      ``num_classes``); every other tensor must be there on both sides, same shape.
    * ``exact=True`` (evaluation, export): every tensor, classifier included; only keys
      starting with ``model.auxiliary_prefixes`` (the ``aux_head.*`` of a token-labeling
      checkpoint) are left out of the file when the model has none of them.

    Otherwise ValueError listing the missing, unexpected and differently shaped tensors
    (the first 20 of each and how many more), unless ``strict=False``: then what fits is
    loaded, the rest keeps its initial values, and a warning says so. ``hint`` is added
    when none of the file's keys starts with ``owner_prefixes`` (weights of another kind
    of model). Logs ``loaded N/M tensors``.

    Returns:
        ``(missing, unexpected)``: tensors left at init and tensors of the file ignored,
        classifier left-outs excepted (both empty unless ``strict=False``).
    """
    path = resolve_weights_path(path)
    source = load_state_dict(path)
    own = model.state_dict()
    prefixes = () if exact else tuple(getattr(model, "classifier_prefixes", ()))
    # extras the model may lack even for an exact fit (``model.auxiliary_prefixes``:
    # the token-labeling head of a starred checkpoint, which the plain forward never uses)
    extras = tuple(getattr(model, "auxiliary_prefixes", ()))
    if extras and not any(key.startswith(extras) for key in own):
        prefixes += extras
    is_classifier = lambda key: bool(prefixes) and key.startswith(prefixes)  # noqa: E731
    loadable = {key: value for key, value in source.items()
                if key in own and list(value.shape) == list(own[key].shape)}
    misshapen = [key for key in own if key in source and key not in loadable
                 and not is_classifier(key)]
    mismatched = [f"{key}: checkpoint {list(source[key].shape)} vs model {list(own[key].shape)}"
                  for key in misshapen]
    missing = [key for key in own if key not in source and not is_classifier(key)]
    unexpected = [key for key in source if key not in own and not is_classifier(key)]
    left_out = sorted(key for key in set(source) | set(own)
                      if key not in loadable and is_classifier(key))
    if missing or unexpected or mismatched:
        problems = [f"{label} ({len(keys)}): {describe_keys(keys, separator=sep)}"
                    for label, keys, sep in (("missing keys", missing, ", "),
                                             ("unexpected keys", unexpected, ", "),
                                             ("shape mismatches", mismatched, "; ")) if keys]
        if mismatched:
            problems.append("wrong variant or model arguments?")
        if hint and source and not any(key.startswith(tuple(owner_prefixes))
                                       for key in source):
            problems.append(hint)
        message = f"weights {path!r} do not fit {what}: " + "; ".join(problems)
        if strict:
            raise ValueError(f"{message}. {OPT_OUT}")
        log.warning("%s -- loading the %d tensors that fit (strict=False); the others keep "
                    "their initial values", message, len(loadable))
    model.set_state_dict(loadable)
    log.info("loaded %d/%d tensors from %s", len(loadable), len(own), path)
    if left_out:
        log.info("left out classifier weights: %s", describe_keys(left_out))
    reinitialised = [key for key in left_out if key in own]
    if reinitialised:  # fine-tuning to other classes: say that the head starts afresh
        log.warning("%s re-initialised: %s has no classifier of this shape (another "
                    "num_classes?), so it trains from its initial values",
                    describe_keys(reinitialised), path)
    return missing + misshapen, unexpected


OPT_OUT = ("To load only what fits, pass strict=False (Python) or "
           f"{MISMATCH_FLAG} (tools)")


def add_mismatch_flag(parser, what="the weights"):
    """The one command-line opt-out of :func:`load_weights`'s strictness."""
    parser.add_argument(MISMATCH_FLAG, MISMATCH_FLAG.replace("_", "-"),
                        action="store_true", dest="allow_mismatched_weights",
                        help=f"load {what} even when tensors are missing, unexpected or "
                             f"differently shaped (refused by default; strict=False)")


# --------------------------------------------------------------------- training checkpoints
def checkpoint_prefix(checkpoint):
    """``P`` from ``P`` or any file of checkpoint ``P``; FileNotFoundError when
    ``P.pdparams`` does not exist."""
    path = os.fspath(checkpoint)
    prefix = strip_suffix(path)
    if not os.path.isfile(prefix + ".pdparams"):
        raise FileNotFoundError(
            f"no training checkpoint at {path!r}: expected the weights file "
            f"{prefix + '.pdparams'!r} (pass a checkpoint prefix such as output/best, or "
            f"its .pdparams file)")
    return prefix


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
    try:
        os.replace(temporary, link)
    except BaseException:
        os.remove(temporary)
        raise


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
    for suffix in CHECKPOINT_SUFFIXES:
        path = os.path.join(folder, name + suffix)
        if os.path.islink(path) and not os.path.exists(path):
            os.remove(path)


def _adopt_plain_files(folder, name):
    """Turn a checkpoint of plain files (pre-versioning) into a versioned one holding the
    same bytes (hard links, else copies); at every moment each path shows the old file."""
    paths = [os.path.join(folder, name + suffix) for suffix in CHECKPOINT_SUFFIXES]
    if not any(os.path.isfile(p) and not os.path.islink(p) for p in paths):
        return
    version = _new_version(folder, name)
    present = []
    for suffix, path in zip(CHECKPOINT_SUFFIXES, paths):
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
            marker in entry for marker in CHECKPOINT_SUFFIXES + (".ckpt",))
        dangling = (entry.endswith(CHECKPOINT_SUFFIXES) and os.path.islink(path)
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
    return {suffix: base + suffix for suffix in CHECKPOINT_SUFFIXES}


def refuse_code(path, what):
    """For a file that another library (PaddleSeg, PaddleDetection) reads with
    ``paddle.load``, i.e. ``pickle.load``: read it here first, without running code, so
    that a file with a payload is refused (ValueError naming it and the global) before
    that library opens it. A missing file is left to the library's own message."""
    if path and os.path.isfile(path):
        safe_pickle.load(path, what)


def read_states(prefix):
    """The ``.pdstates`` dict of checkpoint ``prefix``, or None when it has none."""
    path = checkpoint_files(prefix)[".pdstates"]
    if not os.path.isfile(path):
        return None
    states = safe_pickle.load(path, "training states")
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
                        ("states", ".pdstates"), ("ema", ".pdema")):
        loaded[key] = (safe_pickle.load(files[suffix], f"checkpoint file ({prefix + suffix})")
                       if os.path.isfile(files[suffix]) else None)
    return loaded


# ------------------------------------------------------------------------------ exports
def _plain(value):
    """Tuples and lists alike in JSON."""
    return list(value) if isinstance(value, (list, tuple)) else value


def write_meta(path, meta):
    with open(path, "w") as f:
        json.dump(meta, f, indent=2, default=_plain)
        f.write("\n")
    return path


def read_json(path, what):
    """The JSON document at ``path``; ValueError naming ``what`` and the file when it
    cannot be read or parsed."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {what} {path!r}: {error}") from None


def read_meta(path, required=()):
    """The ``.meta.json`` sidecar of an export; FileNotFoundError / ValueError naming the
    file, or the ``required`` keys it lacks."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no export metadata at {path!r} (written by "
                                f"tools/export.py next to the exported weights)")
    meta = read_json(path, "export metadata")
    missing = [key for key in required if key not in meta]
    if missing:
        raise ValueError(f"export metadata {path!r} lacks {', '.join(missing)}")
    return meta


def export_prefix(path, suffixes=PROGRAM_SUFFIXES + (META_SUFFIX,)):
    """``P`` of an exported program from ``P``, one of its files, or a directory holding
    one; FileNotFoundError naming each file of ``suffixes`` that is absent."""
    given = os.fspath(path)
    prefix = given
    if os.path.isdir(given):
        found = sorted(glob.glob(os.path.join(given, "*.pdiparams")))
        if len(found) != 1:
            raise FileNotFoundError(
                f"expected one exported model (*.pdiparams) in directory {given!r}, found "
                f"{len(found)}; pass its prefix instead")
        prefix = found[0]
    prefix = strip_suffix(prefix, suffixes)
    absent = [prefix + suffix for suffix in suffixes if not os.path.isfile(prefix + suffix)]
    if absent:
        raise FileNotFoundError(
            f"no exported inference model at {given!r}: missing {', '.join(absent)} "
            f"(write them with tools/export.py inference)")
    return prefix


def _same_file(path, protected):
    """Whether writing ``path`` would write one of the ``protected`` files: the same
    real path (symbolic links and ``..`` resolved) or the same file (a hard link)."""
    real = os.path.realpath(path)
    if real in {os.path.realpath(p) for p in protected}:
        return True
    if not os.path.exists(path):
        return False
    return any(os.path.exists(p) and os.path.samefile(path, p) for p in protected)


def check_writable(paths, source_checkpoint=None):
    """Make the folders of ``paths`` (ValueError when a file is in the way), refusing
    any path that would write a file of ``source_checkpoint`` (a prefix), through
    whatever links."""
    protected = ([source_checkpoint + s for s in CHECKPOINT_SUFFIXES]
                 if source_checkpoint else [])
    for path in paths:
        if _same_file(path, protected):
            raise ValueError(f"refusing to overwrite the source checkpoint file {path!r} "
                             f"(it is {os.path.realpath(path)!r}); choose another output")
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as error:
            raise ValueError(f"cannot write {path!r}: a part of {folder!r} is a file, not a "
                             f"directory ({error.strerror})") from None
