"""Token labeling (LV-ViT, Jiang et al. 2021, "All Tokens Matter"): the label maps on
disk, their journey through the training crop and flip, and MixToken.

On-disk format (one folder, written by ``tools/token_labels.py``, read here):

* ``meta.json``: ``format`` (``"paddle_pale.label_maps"``), ``version`` (1),
  ``num_images`` N, ``grid`` ``[G_h, G_w]`` (cells of the map over the whole image),
  ``topk`` k, ``num_classes`` K, ``files`` (the images' paths relative to the data set
  root, in the data set's order: the index of a map is the index of its image),
  ``teacher`` (what made them: checkpoint, arch, input size).
* ``indices.npy``: ``[N, k, G_h, G_w]`` int16 (int32 when K > 32767), the teacher's top-k
  classes per cell, best first.
* ``scores.npy``: ``[N, k, G_h, G_w]`` float16, their softmax probabilities.
* ``done.npy``: ``[N]`` uint8, 0 not yet written, 1 written, 2 unreadable image; what
  makes a run resumable (a map counts as written only after its data was flushed).

Plain ``.npy`` files (numpy's format, read with ``mmap_mode="r"``: no pickle, no code run
from the data). At 14x14 cells and top-5 a map takes 5 * 196 * 4 = 3,920 bytes (ImageNet's
1.28M training images: 5.0 GB); at 7x7, 980 bytes (1.26 GB).

Cell ``(r, c)`` of a map covers rows ``[r H / G_h, (r + 1) H / G_h)`` and the matching
columns of the image as decoded (the teacher scores the whole image resized to a
square, nothing cropped). A training crop takes, for each of its stage-4 tokens (32x32
pixels of the network input), the area-weighted mean of the dense maps of the cells it
covers (:func:`crop_label_map`), so a token's target is exactly the average of the
teacher's piecewise-constant map over the pixels the token sees; a flip mirrors it.
LV-ViT does the same with RoIAlign (bilinear samples); area weights make the result
independent of sampling points. RandAugment's geometric ops (small rotations, shears,
translations) are not followed, as in LV-ViT, whose label transforms follow the crop and
the flip only.
"""
import json
import math
import os
import random

import numpy as np
import paddle
from paddle.vision.transforms import functional as TF

from ..utils.io import read_json
from .datasets import ClassificationDataset
from .randaugment import RandAugment
from .train_transforms import to_uint8_chw
from .transforms import load_image

__all__ = ["FORMAT", "TOKEN_STRIDE", "LabelMaps", "LabelMapWriter", "dense_label_map",
           "area_weights", "crop_label_map", "random_crop_box", "TokenLabelTransform",
           "MixToken", "TokenLabelDataset", "relative_files", "token_grid",
           "check_token_input_size"]

FORMAT = "paddle_pale.label_maps"
VERSION = 1
META_FILE, INDICES_FILE, SCORES_FILE, DONE_FILE = ("meta.json", "indices.npy", "scores.npy",
                                                   "done.npy")
PENDING, WRITTEN, UNREADABLE = 0, 1, 2
# stride of the stage-4 tokens the auxiliary head scores (4 x 2 x 2 x 2)
TOKEN_STRIDE = 32


def token_grid(input_size):
    """Stage-4 token grid side of a square input."""
    return input_size // TOKEN_STRIDE


def check_token_input_size(input_size, where="DataLoader.Train.transforms.input_size"):
    if input_size % TOKEN_STRIDE:
        raise ValueError(f"token labeling needs {where} to be a multiple of {TOKEN_STRIDE} "
                         f"(the stage-4 token stride; MixToken cuts on those cells), got "
                         f"{input_size}")


def _read_meta(folder):
    path = os.path.join(folder, META_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder!r} holds no label maps ({META_FILE} missing); "
                                f"write them with tools/token_labels.py")
    meta = read_json(path, "label-map index")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a paddle_pale label-map index (format "
                         f"{FORMAT!r} expected)")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path!r}: label-map format version {meta.get('version')!r}, this "
                         f"version of paddle_pale reads {VERSION}")
    return meta


def _open_array(folder, name, shape, mode="r"):
    path = os.path.join(folder, name)
    try:
        array = np.load(path, mmap_mode=mode, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read label-map array {path!r}: {error}") from None
    if list(array.shape) != list(shape):
        raise ValueError(f"{path!r} has shape {list(array.shape)}, its {META_FILE} says "
                         f"{list(shape)}")
    return array


class LabelMaps:
    """Read-only label maps of one data set split (see the module docstring). Arrays are
    memory-mapped on first use, so each loader worker opens its own after the fork."""

    def __init__(self, folder):
        self.folder = folder
        meta = _read_meta(folder)
        self.meta = meta
        self.num_images = int(meta["num_images"])
        self.grid = tuple(int(g) for g in meta["grid"])
        self.topk = int(meta["topk"])
        self.num_classes = int(meta["num_classes"])
        self.files = list(meta["files"])
        shape = (self.num_images, self.topk) + self.grid
        done = _open_array(folder, DONE_FILE, (self.num_images,))
        pending = int((np.asarray(done) == PENDING).sum())
        if pending:
            raise ValueError(f"label maps {folder!r} are incomplete: {pending} of "
                             f"{self.num_images} images have no map yet; run "
                             f"tools/token_labels.py again with the same arguments (it "
                             f"resumes)")
        self._shape = shape
        self._arrays = None

    def check_files(self, files):
        """The data set's relative paths must be the maps' files, in the same order."""
        files = list(files)
        if files == self.files:
            return
        for index, (mine, theirs) in enumerate(zip(self.files, files)):
            if mine != theirs:
                raise ValueError(
                    f"label maps {self.folder!r} do not match the training split: image "
                    f"{index} is {theirs!r} in the split, {mine!r} in the maps (made for "
                    f"another split or file list?)")
        raise ValueError(f"label maps {self.folder!r} cover {len(self.files)} images, the "
                         f"training split has {len(files)}")

    def __getitem__(self, index):
        """-> ``(indices [k, G_h, G_w] int64, scores [k, G_h, G_w] float32)``."""
        if self._arrays is None:
            self._arrays = (_open_array(self.folder, INDICES_FILE, self._shape),
                            _open_array(self.folder, SCORES_FILE, self._shape))
        indices, scores = self._arrays
        return (np.asarray(indices[index], dtype="int64"),
                np.asarray(scores[index], dtype="float32"))


class LabelMapWriter:
    """Create label maps for ``files`` in ``folder``, or resume the ones there: the index
    must then say the same files, grid, top-k, classes and teacher, else a ValueError
    names what differs (nothing is overwritten)."""

    def __init__(self, folder, files, grid, topk, num_classes, teacher):
        self.folder = folder
        files = list(files)
        meta = {"format": FORMAT, "version": VERSION, "num_images": len(files),
                "grid": [int(g) for g in grid], "topk": int(topk),
                "num_classes": int(num_classes), "teacher": teacher, "files": files}
        shape = (len(files), int(topk)) + tuple(int(g) for g in grid)
        if os.path.isfile(os.path.join(folder, META_FILE)):
            old = _read_meta(folder)
            differs = [key for key in ("num_images", "grid", "topk", "num_classes", "teacher",
                                       "files") if old.get(key) != meta[key]]
            if differs:
                raise ValueError(f"{folder!r} holds label maps made with other {', '.join(differs)}"
                                 f"; write into another folder, or delete it to start over")
            self.indices = _open_array(folder, INDICES_FILE, shape, "r+")
            self.scores = _open_array(folder, SCORES_FILE, shape, "r+")
            self.done = _open_array(folder, DONE_FILE, (len(files),), "r+")
        else:
            os.makedirs(folder, exist_ok=True)
            dtype = "int16" if num_classes <= np.iinfo("int16").max else "int32"
            open_memmap = np.lib.format.open_memmap
            self.indices = open_memmap(os.path.join(folder, INDICES_FILE), "w+", dtype, shape)
            self.scores = open_memmap(os.path.join(folder, SCORES_FILE), "w+", "float16", shape)
            self.done = open_memmap(os.path.join(folder, DONE_FILE), "w+", "uint8", (len(files),))
            self.done.flush()
            # the index last: a folder with meta.json has its arrays
            tmp = os.path.join(folder, META_FILE + ".tmp")
            with open(tmp, "w") as f:
                json.dump(meta, f)
            os.replace(tmp, os.path.join(folder, META_FILE))

    def pending(self):
        """Indices of the images without a map."""
        return np.flatnonzero(np.asarray(self.done) == PENDING).tolist()

    def write(self, positions, indices, scores, status):
        """Maps of images ``positions``: ``indices``/``scores`` ``[n, k, G_h, G_w]``,
        ``status`` ``[n]`` (WRITTEN or UNREADABLE). Data reaches the disk before the
        done flags."""
        positions = np.asarray(positions)
        self.indices[positions] = indices
        self.scores[positions] = scores
        self.indices.flush()
        self.scores.flush()
        self.done[positions] = status
        self.done.flush()


def dense_label_map(indices, scores, num_classes):
    """Top-k ``[k, G_h, G_w]`` -> dense ``[K, G_h, G_w]`` float32 target per cell: the
    top-k scores, divided by their sum (the mass of the other classes is dropped, as a
    top-k map cannot say where it went). A cell without mass (an unreadable image) gets
    a uniform target."""
    k, height, width = indices.shape
    dense = np.zeros((num_classes, height, width), "float32")
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    for j in range(k):
        np.add.at(dense, (indices[j], rows, cols), scores[j])
    total = dense.sum(axis=0, keepdims=True)
    return np.where(total > 0, dense / np.maximum(total, 1e-12), 1.0 / num_classes)


def area_weights(start, stop, cells, out):
    """``[out, cells]``: weight of source cell ``c`` (covering ``[c, c + 1)``) in each of
    ``out`` equal parts of ``[start, stop)`` (source-cell units): overlap / part length."""
    edges = start + (stop - start) * np.arange(out + 1) / out
    low, high = edges[:-1, None], edges[1:, None]
    cell = np.arange(cells)[None, :]
    overlap = np.clip(np.minimum(high, cell + 1) - np.maximum(low, cell), 0.0, None)
    return (overlap / (high - low)).astype("float32")


def crop_label_map(dense, image_size, box, out_size, flip=False):
    """The dense map ``[K, G_h, G_w]`` of a whole ``image_size = (H, W)`` image, cut to
    pixel box ``(top, left, h, w)`` and pooled to ``out_size = (g_h, g_w)`` tokens
    (each the area-weighted mean of the cells it covers), mirrored when ``flip``."""
    num_classes, grid_h, grid_w = dense.shape
    height, width = image_size
    top, left, box_h, box_w = box
    weight_y = area_weights(top * grid_h / height, (top + box_h) * grid_h / height, grid_h,
                            out_size[0])
    weight_x = area_weights(left * grid_w / width, (left + box_w) * grid_w / width, grid_w,
                            out_size[1])
    out = np.einsum("yr,krc,xc->kyx", weight_y, dense, weight_x)
    return np.ascontiguousarray(out[:, :, ::-1] if flip else out, dtype="float32")


def random_crop_box(width, height, scale, ratio, attempts=10):
    """``(top, left, h, w)`` of a random resized crop: the draws of paddle's (and timm's)
    ``RandomResizedCrop``, with its central-crop fallback."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = np.random.uniform(*scale) * area
        aspect = math.exp(np.random.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class TokenLabelTransform:
    """The training augmentation of :func:`~paddle_pale.data.train_transforms.
    build_train_transform` (``on_device=True``) on an image and its label map together:
    the same random resized crop and flip move both; RandAugment touches the image only.

    ``(PIL image, indices, scores)`` in, ``(uint8 [3, S, S], float32 [K, S/32, S/32])``
    out.
    """

    def __init__(self, num_classes, input_size=224, scale=(0.08, 1.0),
                 ratio=(0.75, 1.3333333), interpolation="bicubic", hflip=0.5,
                 randaugment=None, mean=None, **_normalize_args):
        check_token_input_size(input_size)
        self.num_classes = num_classes
        self.input_size = input_size
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.interpolation = interpolation
        self.hflip = hflip
        self.randaugment = None
        if randaugment:
            self.randaugment = RandAugment(**dict(dict(interpolation=interpolation, mean=mean),
                                                  **randaugment))

    def __call__(self, image, indices, scores):
        width, height = image.size
        box = random_crop_box(width, height, self.scale, self.ratio)
        top, left, box_h, box_w = box
        image = TF.resize(TF.crop(image, top, left, box_h, box_w),
                          (self.input_size, self.input_size), self.interpolation)
        flip = self.hflip > 0 and random.random() < self.hflip
        if flip:
            image = TF.hflip(image)
        if self.randaugment is not None:
            image = self.randaugment(image)
        grid = token_grid(self.input_size)
        dense = dense_label_map(indices, scores, self.num_classes)
        target = crop_label_map(dense, (height, width), box, (grid, grid), flip)
        return to_uint8_chw(image), target


def _pixel_mask(token_mask, stride):
    """``[g_h, g_w]`` -> ``[1, 1, g_h * stride, g_w * stride]``."""
    return np.kron(token_mask, np.ones((stride, stride), "float32"))[None, None]


class MixToken:
    """MixToken (LV-ViT) at the stage-4 token grid: each image of the batch takes a box
    of whole 32x32 cells from its mirror in the batch (``flip(0)``, as Mixup); the
    token targets inside the box are the mirror's, and the image-level targets mix as
    ``lam * own + (1 - lam) * mirror`` with ``lam`` = 1 - box area / grid area. The box
    is CutMix's (``lam ~ Beta(alpha, alpha)``, square in proportion, sides
    ``sqrt(1 - lam)`` of the grid's, centred uniformly, clipped) drawn on the token
    grid, as LV-ViT draws it on its patch grid. Mixed in pixel space: the model stays
    the plain classifier (see the README, "Token labeling").

    Draws come from its own generator ``rng`` (as :class:`~paddle_pale.data.mixup.Mixup`).
    """

    def __init__(self, alpha=1.0, prob=1.0, seed=0, stride=TOKEN_STRIDE):
        if alpha <= 0:
            raise ValueError(f"MixToken needs alpha > 0, got {alpha}")
        self.alpha, self.prob, self.stride = alpha, prob, stride
        self.rng = np.random.RandomState(seed)

    def token_box(self, grid_h, grid_w, lam):
        """Box of whole tokens, area about ``(1 - lam)`` of the grid: -> (top, bottom,
        left, right) in token units."""
        cut = np.sqrt(1.0 - lam)
        cut_h, cut_w = int(grid_h * cut), int(grid_w * cut)
        center_y, center_x = self.rng.randint(grid_h), self.rng.randint(grid_w)
        top, bottom = np.clip([center_y - cut_h // 2, center_y + cut_h - cut_h // 2], 0, grid_h)
        left, right = np.clip([center_x - cut_w // 2, center_x + cut_w - cut_w // 2], 0, grid_w)
        return int(top), int(bottom), int(left), int(right)

    def __call__(self, images, targets, token_targets):
        """``images [B, 3, H, W]`` (normalized), ``targets [B, K]``, ``token_targets
        [B, K, H/32, W/32]`` -> the three mixed, and the box (None: not mixed)."""
        grid_h, grid_w = token_targets.shape[2], token_targets.shape[3]
        if images.shape[2] != grid_h * self.stride or images.shape[3] != grid_w * self.stride:
            raise ValueError(f"MixToken: images {list(images.shape)} do not match the token "
                             f"grid {grid_h}x{grid_w} of stride {self.stride}")
        if self.rng.rand() >= self.prob:
            return images, targets, token_targets, None
        lam = float(self.rng.beta(self.alpha, self.alpha))
        top, bottom, left, right = self.token_box(grid_h, grid_w, lam)
        area = (bottom - top) * (right - left)
        if area == 0:
            return images, targets, token_targets, None
        mask = np.zeros((grid_h, grid_w), "float32")
        mask[top:bottom, left:right] = 1.0
        token_mask = paddle.to_tensor(mask[None, None], dtype=token_targets.dtype)
        pixel_mask = paddle.to_tensor(_pixel_mask(mask, self.stride), dtype=images.dtype)
        images = images * (1.0 - pixel_mask) + images.flip(axis=[0]) * pixel_mask
        token_targets = (token_targets * (1.0 - token_mask)
                         + token_targets.flip(axis=[0]) * token_mask)
        lam = 1.0 - area / float(grid_h * grid_w)
        targets = targets * lam + targets.flip(axis=[0]) * (1.0 - lam)
        return images, targets, token_targets, (top, bottom, left, right)


class TokenLabelDataset(ClassificationDataset):
    """A training split with its label maps: items ``(image uint8 [3, S, S], token
    targets float32 [K, S/32, S/32], label, num_skipped)``; an unreadable image is
    replaced by the next readable one, as in the plain split (its map with it).

    Args:
        base: the split (:class:`~paddle_pale.data.datasets.ClassificationDataset`).
        label_maps: :class:`LabelMaps` of that split (same files, same order).
        transform: :class:`TokenLabelTransform`.
        root: the split's root, against which the maps name their files.
    """

    def __init__(self, base, label_maps, transform, root):
        super().__init__(base.samples, transform, "replace", classes=base.classes)
        label_maps.check_files(relative_files(base.samples, root))
        self.label_maps = label_maps

    def _load(self, index):
        path, label = self.samples[index]
        image = load_image(path)  # ImageDecodeError: replaced (see datasets)
        indices, scores = self.label_maps[index]
        try:
            image, target = self.transform(image, indices, scores)
        except Exception as error:  # a preprocessing bug or setting, not a bad file
            raise RuntimeError(f"preprocessing failed on {path!r} ({type(error).__name__}: "
                               f"{error}); check the DataLoader transforms settings") from error
        return image, target, np.int64(label)


def relative_files(samples, root):
    """The paths of ``(path, label)`` samples relative to ``root``, ``/``-separated: how
    label maps name their images."""
    return [os.path.relpath(path, root).replace(os.sep, "/") for path, _ in samples]
