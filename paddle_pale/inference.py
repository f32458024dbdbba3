"""Classifying image files with an exported inference model (Paddle Inference).

Images go through :func:`paddle_pale.data.transforms.build_eval_transform`, the same
preprocessing as validation during training, configured by the ``.meta.json`` that
``tools/export.py inference`` writes next to the model.
"""
import json
import os

import numpy as np

from .data.transforms import build_eval_transform, load_image
from .utils.io import META_SUFFIX, PREPROCESS_KEYS, export_prefix, read_meta

__all__ = ["ImageClassifier", "create_predictor", "onednn_passes_to_delete",
           "program_op_names", "run_predictor", "softmax", "top_k"]


def softmax(logits):
    """Row-wise softmax in float64 (probabilities that sum to 1 to print precision)."""
    shifted = np.asarray(logits, "float64")
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(probs, k):
    """Indices and values of the ``k`` largest entries per row, largest first."""
    k = min(k, probs.shape[-1])
    # stable sort of -p: ties keep the lower class id first
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return order, np.take_along_axis(probs, order, axis=-1)


def default_cpu_threads():
    """Math-library threads when none are given: ``OMP_NUM_THREADS``, else 1 (eager
    paddle's own default)."""
    return int(os.environ.get("OMP_NUM_THREADS", "1"))


# Paddle 3.3.1 cannot run oneDNN's bilinear_interp ("ConvertPirAttribute2RuntimeAttribute
# not support pir::ArrayAttribute<pir::DoubleAttribute>" at the first run), and the
# placement pass puts every interpolation there. Programs holding one (PaddleSeg's
# UPerNet head) keep the oneDNN fusion passes but not the placement pass.
ONEDNN_UNRUNNABLE_OPS = ("bilinear_interp",)
ONEDNN_PLACEMENT_PASS = "onednn_placement_pass"


def program_op_names(program_path):
    """Names of the ops of a PIR program file (``NAME.json`` of ``paddle.jit.save``),
    without their dialect: ``{"conv2d", "matmul", ...}``."""
    with open(program_path) as handle:
        program = json.load(handle)
    names, pending = set(), [program]
    while pending:  # ops nest in regions and blocks (control flow)
        node = pending.pop()
        if isinstance(node, dict):
            for op in node.get("ops", ()):
                if isinstance(op, dict) and isinstance(op.get("#"), str):
                    names.add(op["#"].split(".", 1)[-1])  # "1.conv2d": dialect 1
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return names


def onednn_passes_to_delete(program_path):
    """Passes to delete so that Paddle 3.3.1's oneDNN build of ``program_path`` runs:
    the placement pass when the program holds an op whose oneDNN kernel cannot run
    (:data:`ONEDNN_UNRUNNABLE_OPS`), else none."""
    if program_op_names(program_path) & set(ONEDNN_UNRUNNABLE_OPS):
        return [ONEDNN_PLACEMENT_PASS]
    return []


def create_predictor(prefix, device="cpu", cpu_threads=None, onednn=True):
    """Paddle Inference predictor of the exported program ``prefix.json`` +
    ``prefix.pdiparams``.

    Args:
        device: ``"cpu"`` or ``"gpu"``.
        cpu_threads: math-library threads on CPU (default ``OMP_NUM_THREADS``, or 1).
        onednn: on CPU, run with oneDNN (Paddle Inference's CPU default, and faster for
            these models); False runs Paddle's own CPU kernels.
    """
    from paddle import inference  # import here: paddle is slow to import

    config = inference.Config(prefix + ".json", prefix + ".pdiparams")
    if device == "gpu":
        config.enable_use_gpu(256, 0)
    elif device == "cpu":
        config.disable_gpu()
        if onednn:
            config.enable_onednn()
            for name in onednn_passes_to_delete(prefix + ".json"):
                config.delete_pass(name)
        else:
            config.disable_onednn()
        config.set_cpu_math_library_num_threads(cpu_threads or default_cpu_threads())
    else:
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    config.disable_glog_info()
    return inference.create_predictor(config)


def run_predictor(predictor, batch):
    """Run a Paddle Inference ``predictor`` on one ``batch`` (an array, the program's
    single input); returns every output as an array, in the program's order."""
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(batch.shape))
    handle.copy_from_cpu(batch)
    predictor.run()
    return [predictor.get_output_handle(name).copy_to_cpu()
            for name in predictor.get_output_names()]


class ImageClassifier:
    """A Paddle Inference predictor with the model's eval preprocessing.

    Args:
        model: prefix of an exported model (``P.json``, ``P.pdiparams``,
            ``P.meta.json``), one of those files, or a directory holding one model.
        device: ``"cpu"`` or ``"gpu"`` (needs a CUDA build of Paddle).
        cpu_threads: math library threads on CPU (default: ``OMP_NUM_THREADS`` or 1).
        onednn: run with oneDNN on CPU (see :func:`create_predictor`).
    """

    def __init__(self, model, device="cpu", cpu_threads=None, onednn=True):
        self.prefix = export_prefix(model)
        self.meta = read_meta(self.prefix + META_SUFFIX, PREPROCESS_KEYS + ("num_classes",))
        self.predictor = create_predictor(self.prefix, device, cpu_threads, onednn)
        self.input_size = int(self.meta["input_size"])
        self.transform = build_eval_transform(
            self.input_size, self.meta["crop_pct"], self.meta["mean"], self.meta["std"],
            self.meta["interpolation"])

    def preprocess(self, paths):
        """``[len(paths), 3, S, S]`` float32 batch; ValueError naming a bad file."""
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no image file at {path!r}")
        return np.stack([self.transform(load_image(path)) for path in paths])

    def logits(self, batch):
        """Run the predictor on a ``[B, 3, H, W]`` batch (H and W as exported, when the
        program was exported with a fixed size)."""
        batch = np.ascontiguousarray(batch, dtype="float32")
        # a program exported with a fixed size (--input-size S) records [-1, 3, S, S]
        expected = self.meta.get("input_shape", [-1, 3, -1, -1])[1:]
        if batch.ndim != 4 or any(want not in (-1, got)
                                  for want, got in zip(expected, batch.shape[1:])):
            wanted = ", ".join("any" if size == -1 else str(size) for size in expected)
            raise ValueError(f"expected a batch of shape [B, {wanted}], got "
                             f"{list(batch.shape)}")
        return run_predictor(self.predictor, batch)[0]

    def predict(self, paths, k=5, batch_size=8):
        """Top-``k`` classes of each image file, one result per path, in order.

        A result is ``{"image": path, "class_ids": [...], "probs": [...]}``, most probable
        first (softmax of the logits), with ``"classes"`` (the class names of those ids)
        when the export carries the training class map. A file that is missing or cannot
        be decoded gives ``{"image": path, "error": message}`` and the others are still
        classified.
        """
        if k < 1 or batch_size < 1:
            raise ValueError(f"k and batch_size must be positive, got k={k}, "
                             f"batch_size={batch_size}")
        paths = [os.fspath(p) for p in paths]
        results = [None] * len(paths)
        pending = []  # (index, preprocessed image) of the batch being filled
        for index, path in enumerate(paths):
            try:
                pending.append((index, self.preprocess([path])[0]))
            except (OSError, ValueError) as error:  # this file only
                results[index] = {"image": path, "error": str(error)}
            if len(pending) == batch_size or (pending and index == len(paths) - 1):
                self._classify(pending, paths, results, k)
                pending = []
        return results

    def _classify(self, pending, paths, results, k):
        ids, probs = top_k(softmax(self.logits(np.stack([image for _, image in pending]))), k)
        names = self.meta.get("classes")
        for (index, _), row_ids, row_probs in zip(pending, ids, probs):
            result = {"image": paths[index], "class_ids": [int(i) for i in row_ids]}
            if names:
                result["classes"] = [names[int(i)] if int(i) < len(names) else None
                                     for i in row_ids]
            result["probs"] = [float(p) for p in row_probs]
            results[index] = result
