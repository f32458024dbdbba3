"""Loading weights into a model with a report of what did not match."""
import logging
import os

import paddle

from ..models.pale import CLASSIFIER_PREFIXES

__all__ = ["resolve_weights_path", "load_state_dict", "load_pretrained", "compare_state_dicts",
           "describe_keys", "load_exactly"]

logger = logging.getLogger("paddle_pale")


def resolve_weights_path(path):
    """Accept ``x.pdparams`` or a checkpoint prefix ``x``; raise if neither exists."""
    path = os.fspath(path)
    for candidate in (path, path + ".pdparams"):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"no weights file at {path!r} (nor {path + '.pdparams'!r})")


def load_state_dict(path):
    """Read a weights file written by ``paddle.save(model.state_dict(), ...)``."""
    path = resolve_weights_path(path)
    try:
        state = paddle.load(path)
    except Exception as error:  # paddle raises several types for unreadable files
        raise ValueError(f"cannot read weights file {path!r}: {error}") from error
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"{path!r} does not hold a state dict (got {type(state).__name__})")
    return state


def describe_keys(keys, limit=5, separator=", "):
    """The first ``limit`` of ``keys`` and how many more: error messages stay a line or
    two long however many tensors a wrong checkpoint gets wrong."""
    keys = list(keys)
    shown = separator.join(keys[:limit])
    return shown + (f"{separator}... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def compare_state_dicts(source, own):
    """``(missing, unexpected, mismatched)`` of weights ``source`` against a model's
    ``own`` state dict; ``mismatched`` reads ``"key: checkpoint [..] vs model [..]"``."""
    missing = sorted(set(own) - set(source))
    unexpected = sorted(set(source) - set(own))
    mismatched = [f"{key}: checkpoint {list(source[key].shape)} vs model "
                  f"{list(own[key].shape)}"
                  for key in own if key in source
                  and list(source[key].shape) != list(own[key].shape)]
    return missing, unexpected, mismatched


def load_exactly(model, path, what="the model"):
    """Load weights that must fit ``model`` key for key and shape for shape (evaluation:
    a half-loaded model gives meaningless numbers). ValueError naming what differs."""
    source = load_state_dict(path)
    missing, unexpected, mismatched = compare_state_dicts(source, model.state_dict())
    if missing or unexpected or mismatched:
        problems = [f"{label} ({len(keys)}): {describe_keys(keys)}" for label, keys in (
            ("missing keys", missing), ("unexpected keys", unexpected),
            ("shape mismatches", mismatched)) if keys]
        raise ValueError(f"weights {path!r} do not fit {what}: " + "; ".join(problems))
    model.set_state_dict(source)
    logger.info("loaded %d tensors from %s", len(source), resolve_weights_path(path))


def load_pretrained(model, path, log=logger):
    """Load weights into ``model``, leaving out a classifier it does not have.

    * keys of the classifier (``norm.*``, ``head.*``) that the model lacks, or whose
      shapes differ (another ``num_classes``), are dropped and reported;
    * any other shape mismatch raises ValueError naming the keys and shapes;
    * missing and unexpected keys are logged.

    Returns ``(missing_keys, unexpected_keys)``.
    """
    source = load_state_dict(path)
    own = model.state_dict()
    is_classifier = lambda key: key.startswith(CLASSIFIER_PREFIXES)  # noqa: E731
    dropped, mismatched, loadable = [], [], {}
    for key, value in source.items():
        if key not in own:
            if is_classifier(key):
                dropped.append(key)
            continue
        if list(value.shape) != list(own[key].shape):
            if is_classifier(key):
                dropped.append(key)
            else:
                mismatched.append(f"{key}: checkpoint {list(value.shape)} vs model "
                                  f"{list(own[key].shape)}")
            continue
        loadable[key] = value
    if mismatched:
        raise ValueError(f"shape mismatch loading {path!r} (wrong variant?): "
                         + describe_keys(mismatched, separator="; "))
    unexpected = sorted(k for k in source if k not in own and k not in dropped)
    missing = sorted(k for k in own if k not in loadable)
    model.set_state_dict(loadable)
    log.info("loaded %d tensors from %s", len(loadable), path)
    if dropped:
        log.info("left out classifier weights: %s", ", ".join(sorted(dropped)))
    if missing:
        log.warning("missing keys (kept at init): %s", describe_keys(missing, limit=20))
    if unexpected:
        log.warning("unexpected keys (ignored): %s", describe_keys(unexpected, limit=20))
    return missing, unexpected
