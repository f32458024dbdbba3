"""Getting trained weights out of a training checkpoint.

Three forms:

* ``backbone``: weights-only ``.pdparams`` without the classifier, for the PaddleSeg and
  PaddleDetection backbones' ``pretrained`` option;
* ``inference``: ``paddle.jit.save`` of the classifier (``NAME.json`` + ``NAME.pdiparams``)
  taking any batch and image size, for the Paddle Inference predictor;
* ``onnx``: the same program converted by paddle2onnx.

Each writes a ``.meta.json`` sidecar (``paddle.jit.save`` already owns ``NAME.json``)
with the architecture, the source checkpoint and the eval preprocessing, so that users of
the files need nothing else: ``NAME.meta.json`` beside the backbone and the inference
program, ``NAME.onnx.meta.json`` beside ``NAME.onnx`` (so that an inference export and an
ONNX export of one name keep their own).

A training checkpoint is a prefix ``P`` with ``P.pdparams`` (model weights), optionally
``P.pdema`` (EMA weights, same keys), ``P.pdopt`` and ``P.pdstates`` (a dict with ``arch``:
``{'name': variant, **model kwargs}``, ``input_size``, ``crop_pct``, ``mean``, ``std``, ...).
"""
import copy
import importlib
import numbers
import os
import tempfile

import paddle

from .kernels import use_plain_layers
from .models.pale import MIN_INPUT_SIZE
from .models.registry import create_model, list_models, pretrained_cfg
from .utils.io import (META_SUFFIX, PREPROCESS_KEYS, SAFETENSORS_SUFFIX, check_writable,
                       checkpoint_prefix, load_state_dict, load_weights, read_states,
                       save_safetensors, strip_suffix, write_meta)

__all__ = ["load_checkpoint", "export_backbone", "export_inference", "export_onnx",
           "remove_unused_initializers", "EXPORT_FORMATS", "export", "static_model",
           "input_shape"]

EXPORT_FORMATS = ("backbone", "inference", "onnx")
WEIGHTS_FORMATS = ("pdparams", "safetensors")


# Arch keys of the token-labeling head (Pale-T*): not part of a backbone
TOKEN_HEAD_ARCH_KEYS = ("token_head", "token_inference")


def _requested_arch(arch):
    if arch is None:
        return {}
    if isinstance(arch, str):
        return {"name": arch}
    if isinstance(arch, dict):
        return dict(arch)
    raise TypeError(f"arch must be a variant name or a dict with 'name', got {arch!r}")


def _resolve_arch(prefix, states, requested, weights_path):
    """The model arguments to rebuild the checkpoint's model with.

    ``arch`` in ``.pdstates`` wins; what the caller asks for must agree with it. Without
    states the caller must name the variant; ``num_classes`` then comes from the head.
    """
    stored = None if states is None else states.get("arch")
    if stored is not None:
        if not isinstance(stored, dict) or not isinstance(stored.get("name"), str):
            raise ValueError(f"'arch' in {prefix + '.pdstates'!r} must be a dict with a "
                             f"variant 'name', got {stored!r}")
        stored = dict(stored)
        conflicts = [f"{key}={value!r} (checkpoint has {stored.get(key)!r})"
                     for key, value in requested.items()
                     if key in stored and _as_list(stored[key]) != _as_list(value)]
        if conflicts:
            raise ValueError(
                f"checkpoint {prefix!r} was trained as {stored['name']} with "
                f"{_describe(stored)}; requested {', '.join(conflicts)}: wrong variant?")
        return dict(stored, **requested)
    if "name" not in requested:
        raise ValueError(
            f"checkpoint {prefix!r} has no .pdstates recording its architecture: name the "
            f"variant (--model, one of {', '.join(list_models())})")
    arch = dict(requested)
    if "num_classes" not in arch:
        head = load_state_dict(weights_path).get("head.weight")
        if head is not None:
            arch["num_classes"] = int(head.shape[-1])  # Linear weight: [in, out]
    return arch


def _as_list(value):
    """Tuples and lists compare alike (YAML and paddle.save give lists)."""
    return list(value) if isinstance(value, (list, tuple)) else value


def _describe(arch):
    return ", ".join(f"{k}={v!r}" for k, v in arch.items() if k != "name") or "defaults"


def _eval_config(name, states, input_size=None):
    """Eval preprocessing: the checkpoint's, else the variant's pretrained config."""
    config = pretrained_cfg(name)
    config["input_size"] = config["input_size"][-1]  # (3, S, S) -> S
    for key in PREPROCESS_KEYS:
        if states is not None and states.get(key) is not None:
            config[key] = states[key]
    if input_size is not None:
        config["input_size"] = input_size
    size = config["input_size"]
    if isinstance(size, (list, tuple)):
        if len(set(size[-2:])) != 1:
            raise ValueError(f"eval input size must be square, got {size!r}")
        size = size[-1]
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) \
            or size < MIN_INPUT_SIZE:
        raise ValueError(f"input size must be an int of at least {MIN_INPUT_SIZE} (the "
                         f"stride of the first patch merging), got {size!r}")
    return {"input_size": int(size), "crop_pct": float(config["crop_pct"]),
            "mean": [float(m) for m in config["mean"]],
            "std": [float(s) for s in config["std"]],
            "interpolation": str(config["interpolation"])}


def load_checkpoint(checkpoint, arch=None, use_ema=True, with_classifier=True,
                    input_size=None):
    """Rebuild a trained model from a training checkpoint, in eval mode.

    Args:
        checkpoint: prefix ``P`` (or ``P.pdparams``) of the checkpoint files.
        arch: variant name or ``{'name': ..., **model kwargs}``; needed when the
            checkpoint has no ``.pdstates``, checked against it otherwise.
        use_ema: load ``P.pdema`` when it exists (the weights that were evaluated).
        with_classifier: False builds the backbone only (classifier weights left out).
        input_size: eval crop size; defaults to the checkpoint's, then the variant's.

    Returns:
        ``(model, meta)``: meta holds ``arch``, ``source_checkpoint``, ``weights`` (the
        file loaded), ``epoch``, ``classes`` (class names by id, or None) and the eval
        preprocessing.

    Raises:
        FileNotFoundError: no checkpoint at ``checkpoint``.
        ValueError: the weights do not fit the architecture (wrong variant, other
            model arguments), or the architecture is unknown.
    """
    prefix = checkpoint_prefix(checkpoint)
    states = read_states(prefix)
    weights_path = prefix + ".pdema"
    if not (use_ema and os.path.isfile(weights_path)):
        weights_path = prefix + ".pdparams"
    arch = _resolve_arch(prefix, states, _requested_arch(arch), weights_path)
    name, kwargs = arch["name"], {k: v for k, v in arch.items() if k != "name"}
    if not with_classifier:  # a backbone: the token-labeling head goes with the classifier
        kwargs = {k: v for k, v in kwargs.items() if k not in TOKEN_HEAD_ARCH_KEYS}
    try:
        model = create_model(name, **dict(kwargs, with_classifier=with_classifier))
    except TypeError as error:  # an argument PaleTransformer does not take
        raise ValueError(f"cannot build {name} from arch {arch!r}: {error}") from error
    # an export keeps no freshly initialised tensor; a backbone leaves out the classifier
    load_weights(model, weights_path, exact=with_classifier,
                 what=f"{name} ({_describe(kwargs)}; wrong variant or model arguments?)")
    model.eval()
    meta = {"arch": arch, "variant": name,
            "num_classes": arch.get("num_classes", pretrained_cfg(name)["num_classes"]),
            "source_checkpoint": os.path.abspath(prefix),
            "weights": os.path.basename(weights_path),
            "epoch": None if states is None else states.get("epoch"),
            # class names, index = class id (None for a checkpoint without them)
            "classes": None if states is None else states.get("classes")}
    meta.update(_eval_config(name, states, input_size))
    return model, meta


def export_backbone(model, meta, output, weights_format=None):
    """Write the weights without the classifier (``norm.*``, ``head.*``, and the
    token-labeling ``aux_head.*``) to
    ``output.pdparams`` or ``output.safetensors`` (``weights_format``; default: the
    suffix of ``output``, else pdparams) and the sidecar to ``output.meta.json``.

    A ``.safetensors`` file also carries the sidecar's content as its metadata (variant,
    arch with its attention mode, num_classes, classes, input size, crop pct, mean, std,
    interpolation: timm's ``pretrained_cfg``), so it describes itself when shared alone.

    Returns the paths written.
    """
    if weights_format is None:
        weights_format = ("safetensors" if os.fspath(output).endswith(SAFETENSORS_SUFFIX)
                          else "pdparams")
    if weights_format not in WEIGHTS_FORMATS:
        raise ValueError(f"unknown weights format {weights_format!r}; expected one of "
                         f"{', '.join(WEIGHTS_FORMATS)}")
    base = strip_suffix(output, (".pdparams", SAFETENSORS_SUFFIX))
    paths = [f"{base}.{weights_format}", base + META_SUFFIX]
    check_writable(paths, meta.get("source_checkpoint"))
    state = {key: value for key, value in model.state_dict().items()
             if not key.startswith(model.classifier_prefixes)}
    meta = dict(meta, format="backbone", num_tensors=len(state),
                attention_mode=model.attention_mode)
    if weights_format == "safetensors":
        shared = {k: v for k, v in meta.items() if k != "source_checkpoint"}  # a local path
        save_safetensors(state, paths[0], dict(shared, weights_format="paddle_pale"))
    else:
        paddle.save(state, paths[0])
    write_meta(paths[1], meta)
    return paths


def input_shape(fixed_size=None):
    """``[-1, 3, H, W]`` of an exported program: batch dynamic, H and W dynamic (-1)
    unless ``fixed_size`` (an int or ``(H, W)``) fixes them."""
    if fixed_size is None:
        return [-1, 3, -1, -1]
    height, width = (fixed_size, fixed_size) if isinstance(fixed_size, int) else fixed_size
    return [-1, 3, int(height), int(width)]


def static_model(model, fixed_size=None):
    """A static-graph copy of ``model`` for ``paddle.jit.save``, in its plain form
    (whatever kernels the eager model uses, the graph holds the stock layers) with NCHW
    convolutions (Paddle Inference's oneDNN kernels misread channels-last ones). Batch, H
    and W are dynamic, as in PaddleSeg's and PaddleDetection's export tools, unless
    ``fixed_size`` (an int or ``(H, W)``) fixes H and W."""
    shape = [None if size == -1 else size for size in input_shape(fixed_size)]
    spec = paddle.static.InputSpec(shape, "float32", "image")
    model = use_plain_layers(copy.deepcopy(model))  # to_static converts its layer in place
    if getattr(model, "channels_last", False):
        model.set_channels_last(False)  # NCHW convolutions: what every backend reads
    model.eval()
    return paddle.jit.to_static(model, input_spec=[spec], full_graph=True)


def export_inference(model, meta, output, fixed_size=None):
    """``paddle.jit.save`` the classifier to ``output.json`` + ``output.pdiparams``
    (any batch, any H and W unless ``fixed_size``) and write ``output.meta.json``.

    Returns the paths written.
    """
    prefix = strip_suffix(output, (".json",))
    paths = [prefix + ".json", prefix + ".pdiparams", prefix + META_SUFFIX]
    check_writable(paths, meta.get("source_checkpoint"))
    paddle.jit.save(static_model(model, fixed_size), prefix)
    write_meta(paths[2], dict(meta, format="inference", input_name="image",
                              input_shape=input_shape(fixed_size)))
    return paths


def _import_or_explain(module, purpose):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs the {module} package, which is not installed: "
            f"pip install paddle2onnx onnxruntime (the [onnx] extra of paddle-pale: "
            f"pip install -e \".[onnx]\")") from error


def remove_unused_initializers(path):
    """Drop from the ONNX file ``path`` the nodes whose results no graph output needs and
    the initializers left unread (paddle2onnx keeps the shape arithmetic it folded, and
    onnxruntime warns once per such tensor at every load); returns how many
    initializers were removed. Needs the ``onnx`` package (a paddle2onnx dependency);
    without it the file stays as it is."""
    try:
        import onnx
    except ImportError:
        return 0
    model = onnx.load(path)
    graph = model.graph

    def reads(node):
        """Names a node reads, those of its subgraphs (If / Loop bodies) included."""
        names = set(node.input)
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(
                    attribute.graphs):
                for inner in sub.node:
                    names |= reads(inner)
        return names
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):  # ONNX nodes are in topological order
        if any(name in needed for name in node.output):
            kept.append(node)
            needed |= reads(node)
    unused = [init for init in graph.initializer if init.name not in needed]
    if len(kept) == len(graph.node) and not unused:
        return 0
    del graph.node[:]
    graph.node.extend(reversed(kept))
    for init in unused:
        graph.initializer.remove(init)
    onnx.save(model, path)
    return len(unused)


def export_onnx(model, meta, output, opset_version=13, fixed_size=None):
    """Convert the classifier to ONNX with paddle2onnx (any batch, any H and W unless
    ``fixed_size``) and write ``output.onnx.meta.json`` beside ``output.onnx``.

    Raises ImportError naming paddle2onnx when it is not installed.
    """
    paddle2onnx = _import_or_explain("paddle2onnx", "ONNX export")
    base = strip_suffix(output, (".onnx",))
    paths = [base + ".onnx", base + ".onnx" + META_SUFFIX]
    check_writable(paths, meta.get("source_checkpoint"))
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "model")
        paddle.jit.save(static_model(model, fixed_size), prefix)
        if os.path.exists(paths[0]):
            os.remove(paths[0])  # a stale file would hide a failed conversion
        try:
            # no Python-side optimizer: paddle2onnx 2.1.0's default (polygraphy) pip-
            # installs packages at run time, and its onnxoptimizer pass list holds an
            # unknown pass name ("eliminate_nop_cast "), so that path always falls back;
            # the converter's own graph optimization still runs
            paddle2onnx.export(prefix + ".json", prefix + ".pdiparams", save_file=paths[0],
                               opset_version=opset_version, optimize_tool="none")
        except Exception as error:  # paddle2onnx logs the cause, then fails on its own
            raise RuntimeError(f"paddle2onnx could not convert {meta['variant']}: "
                               f"{error!r} (see its log above)") from error
    if not os.path.isfile(paths[0]):
        raise RuntimeError(f"paddle2onnx wrote no {paths[0]!r} (see its log above)")
    remove_unused_initializers(paths[0])
    write_meta(paths[1], dict(meta, format="onnx", input_name="image",
                              input_shape=input_shape(fixed_size), opset_version=opset_version))
    return paths


def export(kind, checkpoint, output, arch=None, use_ema=True, input_size=None,
           opset_version=13, weights_format=None):
    """Load ``checkpoint`` and write it as ``kind`` (one of ``EXPORT_FORMATS``).

    ``input_size`` replaces the checkpoint's eval crop size and fixes the exported
    program's H and W to it; without it the program takes any size."""
    if kind not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {kind!r}; expected one of "
                         f"{', '.join(EXPORT_FORMATS)}")
    if kind == "onnx":  # fail before the (slow) model build when it cannot work
        _import_or_explain("paddle2onnx", "ONNX export")
    model, meta = load_checkpoint(checkpoint, arch, use_ema=use_ema,
                                  with_classifier=kind != "backbone", input_size=input_size)
    if kind == "backbone":
        return export_backbone(model, meta, output, weights_format)
    if kind == "inference":
        return export_inference(model, meta, output, input_size)
    return export_onnx(model, meta, output, opset_version, input_size)
