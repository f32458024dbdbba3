"""Make token-labeling label maps (LV-ViT's "dense score maps") with a trained
classifier of this project as teacher: ``tools/token_labels.py``.

The teacher sees each training image whole, resized to ``input_size`` x ``input_size``
(no crop: the map must cover what any training crop may take) and normalized as the
checkpoint was evaluated; its classifier (``norm`` then ``head``) scores every stage-4
token, a grid of ``input_size / 32`` cells a side; the softmax's top-k classes and
probabilities per cell are written in the format of :mod:`paddle_pale.data.token_labels`.
A teacher at twice the student's resolution (448 for a 224 student) gives 14x14 maps,
LV-ViT's size.

Exported inference programs (``tools/export.py inference``) return pooled class logits
only, no per-token scores, so they cannot make maps; use the training checkpoint.
LV-ViT's published maps (NFNet-F6, one ``torch.save`` ``.pt`` file per image) are pickled
PyTorch tensors: reading them needs PyTorch's unpickler, which runs code from the file,
and this project reads no pickle it did not restrict (see utils/safe_pickle); they are not
read here.
"""
import logging
import os
import time

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.io import DataLoader, Dataset
from paddle.vision import transforms as T

from .data.datasets import ImageFolderDataset, ImageListDataset
from .data.token_labels import WRITTEN, UNREADABLE, LabelMapWriter, relative_files
from .data.transforms import ImageDecodeError, load_image, normalize_ops, to_float_hwc
from .export import load_checkpoint
from .utils.log import format_eta

__all__ = ["teacher_token_scores", "make_label_maps"]

logger = logging.getLogger("paddle_pale")


class _WholeImages(Dataset):
    """``(position, image [3, S, S] float32, readable)`` of the images still to label."""

    def __init__(self, paths, positions, transform):
        self.paths, self.positions, self.transform = paths, positions, transform

    def __len__(self):
        return len(self.positions)

    def __getitem__(self, item):
        position = self.positions[item]
        try:
            image = self.transform(load_image(self.paths[position]))
            readable = 1
        except ImageDecodeError as error:
            logger.warning("token labels: unreadable image left without a map: %s", error)
            size = self.transform.transforms[0].size
            image = np.zeros((3,) + tuple(size), "float32")
            readable = 0
        return np.int64(position), np.asarray(image, "float32"), np.int64(readable)


@paddle.no_grad()
def teacher_token_scores(model, images, topk):
    """Top-k ``(indices, probabilities)`` ``[B, k, H/32, W/32]`` of the teacher's
    classifier applied to every stage-4 token of ``images``."""
    tokens = model.forward_features(images)  # [B, h, w, C_4]
    logits = model.head(model.norm(tokens)).astype("float32")  # [B, h, w, K]
    probs = F.softmax(logits, axis=-1)
    scores, indices = paddle.topk(probs, k=topk, axis=-1)
    return (indices.transpose([0, 3, 1, 2]).numpy(), scores.transpose([0, 3, 1, 2]).numpy())


def _split_samples(root, list_file):
    if list_file:
        return ImageListDataset(root, list_file, transform=None).samples
    return ImageFolderDataset(root, transform=None).samples


def make_label_maps(checkpoint, root, output, list_file=None, input_size=None, topk=5,
                    batch_size=64, num_workers=4, arch=None, print_interval=50, log=None):
    """Label maps of the split ``root`` (``ImageFolder``, or ``ImageList`` with
    ``list_file``) by the classifier of ``checkpoint``, into folder ``output``;
    resumes a folder of the same files and teacher. -> dict of what was done."""
    log = log or logger.info
    model, meta = load_checkpoint(checkpoint, arch=arch)
    size = int(input_size or meta["input_size"])
    if size % 32:
        raise ValueError(f"--input-size must be a multiple of 32 (the stage-4 stride: one "
                         f"map cell per token), got {size}")
    num_classes = int(meta["num_classes"])
    if not 1 <= topk <= num_classes:
        raise ValueError(f"--topk must be in [1, {num_classes}] (the teacher's classes), "
                         f"got {topk}")
    samples = _split_samples(root, list_file)
    files = relative_files(samples, root)
    grid = (size // 32, size // 32)
    teacher = {"checkpoint": os.path.abspath(meta["source_checkpoint"]),
               "weights": meta["weights"], "arch": meta["arch"], "input_size": size,
               "mean": meta["mean"], "std": meta["std"], "resize": "whole image, square",
               "interpolation": meta["interpolation"]}
    writer = LabelMapWriter(output, files, grid, topk, num_classes, teacher)
    todo = writer.pending()
    total = len(files)
    log(f"token labels: {len(todo)} of {total} images to label ({total - len(todo)} done "
        f"before), grid {grid[0]}x{grid[1]}, top-{topk}, teacher {meta['arch'].get('name')} "
        f"at {size}x{size}, into {output}")
    transform = T.Compose([T.Resize((size, size), interpolation=meta["interpolation"]),
                           to_float_hwc, *normalize_ops(meta["mean"], meta["std"])])
    loader = DataLoader(_WholeImages([path for path, _ in samples], todo, transform),
                        batch_size=batch_size, shuffle=False, num_workers=num_workers)
    tic = time.time()
    done = 0
    for step, (positions, images, readable) in enumerate(loader):
        indices, scores = teacher_token_scores(model, images, topk)
        readable = readable.numpy().astype(bool)
        scores[~readable] = 0.0
        writer.write(positions.numpy(), indices, scores,
                     np.where(readable, WRITTEN, UNREADABLE).astype("uint8"))
        done += len(readable)
        if (step + 1) % print_interval == 0 or done == len(todo):
            elapsed = time.time() - tic
            log(f"token labels: {total - len(todo) + done}/{total} images "
                f"({100.0 * (total - len(todo) + done) / total:.1f}%), "
                f"{done / elapsed:.1f} images/s, eta "
                f"{format_eta(elapsed / done * (len(todo) - done))}")
    return {"output": output, "labeled": done, "total": total, "grid": grid, "topk": topk,
            "seconds": time.time() - tic}
