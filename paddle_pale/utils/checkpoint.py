"""Loading weights into a model with a report of what did not match."""
import logging
import os

import paddle

from ..models.pale import CLASSIFIER_PREFIXES

__all__ = ["resolve_weights_path", "load_state_dict", "load_pretrained"]

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
                         + "; ".join(mismatched))
    unexpected = sorted(k for k in source if k not in own and k not in dropped)
    missing = sorted(k for k in own if k not in loadable)
    model.set_state_dict(loadable)
    log.info("loaded %d tensors from %s", len(loadable), path)
    if dropped:
        log.info("left out classifier weights: %s", ", ".join(sorted(dropped)))
    if missing:
        log.warning("missing keys (kept at init): %s", ", ".join(missing))
    if unexpected:
        log.warning("unexpected keys (ignored): %s", ", ".join(unexpected))
    return missing, unexpected
