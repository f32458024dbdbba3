"""Pictures of the attention modes (``tools/visualize.py``).

* :func:`draw_regions`: Figure-1-style grid, one panel per mode, the tokens one query
  attends to on an H x W map, drawn from the reference masks of
  :func:`paddle_pale.models.attention_reference.mode_masks` (the definitions the tests
  check every mode against);
* :func:`attention_maps` and :func:`draw_attention`: for a trained model and a real image,
  the attention weights of one query pixel at every stage (heads averaged per
  direction), read out of the model's own attention: the weights are the gradient of the
  query's output with respect to V, which the output depends on linearly.
"""
import os

import numpy as np
import paddle
from PIL import Image

from .data.transforms import load_image, normalize_ops, to_float_hwc
from .models.attention_reference import mode_masks
from .models.modes import MODES, mode_attention
from .utils.plotting import pyplot

__all__ = ["REGION_COLORS", "region_panels", "region_cells", "draw_regions",
           "attention_maps", "draw_attention", "attention_picture", "load_picture",
           "prepare_image", "SAMPLE_IMAGES"]

# RGB (0-255) of each kind of cell in the regions picture
REGION_COLORS = {
    "query": (0, 0, 0),
    "rows": (66, 133, 244),      # first half of the heads (row direction) only
    "columns": (251, 140, 0),    # second half (column direction) only
    "both": (142, 36, 170),      # both halves
    "all": (46, 160, 67),        # modes that attend with every head
    "none": (236, 236, 236),     # not attended
}
REGION_LABELS = {
    "query": "query token", "rows": "keys of the first half of the heads (rows)",
    "columns": "keys of the second half (columns)", "both": "keys of both halves",
    "all": "keys of all heads", "none": "not attended",
}
SAMPLE_IMAGES = ("china", "flower")  # scikit-learn's bundled photographs


def region_panels(pale_size=7, stripe_width=2):
    """The panels of :func:`draw_regions`: ``(title, mode, size, block_index)``."""
    return [(title, name, size, block_index) for name in MODES
            for title, size, block_index in MODES[name].panels(pale_size, stripe_width)]


def region_cells(mode, height, width, query, size=None, block_index=0):
    """``[H, W]`` array of :data:`REGION_COLORS` keys: what each token is to ``query``
    (``(row, column)``) under ``mode``'s reference mask."""
    masks = mode_masks(mode, height, width, size, block_index)
    index = query[0] * width + query[1]
    if len(masks) == 2:
        rows, cols = (m[index].reshape(height, width) for m in masks)
        cells = np.where(rows & cols, "both", np.where(rows, "rows",
                                                         np.where(cols, "columns", "none")))
    else:
        cells = np.where(masks[0][index].reshape(height, width), "all", "none")
    cells = cells.astype(object)
    cells[query] = "query"
    return cells


def _check_query(query, height, width):
    if not (0 <= query[0] < height and 0 <= query[1] < width):
        raise ValueError(f"query {tuple(query)} lies outside the {height}x{width} map")


def draw_regions(path, height=28, width=28, query=(13, 10), pale_size=7, stripe_width=2,
                 cell_pixels=8):
    """Write the regions picture to ``path`` (PNG).

    Returns a dict: ``path``, and ``panels``, one per panel with ``title``, ``mode``,
    ``size``, ``block_index`` and ``extent``: the pixel box ``(left, top, right, bottom)``
    of its H x W grid in the PNG (cell ``(r, c)`` spans ``1/W`` and ``1/H`` of it).
    """
    _check_query(query, height, width)
    plt = pyplot()
    from matplotlib.patches import Patch

    panels = region_panels(pale_size, stripe_width)
    columns = 3
    rows = -(-len(panels) // columns)
    side = max(width, height) * cell_pixels / 100.0  # inches at dpi 100
    figure, axes = plt.subplots(rows, columns, figsize=(columns * (side + 0.3),
                                                        rows * (side + 0.45) + 1.2), dpi=100)
    axes = np.atleast_1d(axes).reshape(-1)
    drawn = []
    for ax, (title, mode, size, block_index) in zip(axes, panels):
        cells = region_cells(mode, height, width, query, size, block_index)
        rgb = np.array([[REGION_COLORS[c] for c in row] for row in cells], dtype="uint8")
        ax.imshow(rgb, interpolation="nearest", extent=(0, width, height, 0))
        # thin white lines between cells (cell centres keep their colour)
        ax.set_xticks(np.arange(width + 1), minor=True)
        ax.set_yticks(np.arange(height + 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.4)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        ax.set_title(title, fontsize=9)
        drawn.append((ax, dict(title=title, mode=mode, size=size, block_index=block_index)))
    for ax in axes[len(panels):]:
        ax.axis("off")
    used = sorted({c for ax, p in drawn for c in region_cells(
        p["mode"], height, width, query, p["size"], p["block_index"]).reshape(-1)},
        key=list(REGION_COLORS).index)
    figure.legend(handles=[Patch(color=np.array(REGION_COLORS[c]) / 255, label=REGION_LABELS[c])
                           for c in used], loc="lower center", ncol=3, fontsize=8, frameon=False)
    figure.suptitle(f"tokens that query ({query[0]}, {query[1]}) attends to on a "
                    f"{height}x{width} map (pale size {pale_size})", fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=1.0 / figure.get_figheight(),
                           top=1 - 0.45 / figure.get_figheight(), wspace=0.1, hspace=0.22)
    figure.canvas.draw()
    pixel_height = figure.canvas.get_width_height()[1]
    result = {"path": path, "panels": []}
    for ax, panel in drawn:
        (left, bottom), (right, top) = ax.transData.transform([(0, height), (width, 0)])
        panel["extent"] = (left, pixel_height - top, right, pixel_height - bottom)
        result["panels"].append(panel)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return result


# --------------------------------------------------------------------- attention maps
def load_picture(image):
    """An RGB PIL image: ``china`` / ``flower`` (scikit-learn's sample photographs) or a
    path to an image file."""
    if image in SAMPLE_IMAGES:
        import sklearn.datasets
        image = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images",
                             f"{image}.jpg")
    return load_image(image)


def _stage_sizes(model, height, width):
    """Map size of every stage for an H x W input (stride-4 then stride-2 convolutions
    with padding k // 2, which round up)."""
    sizes = []
    for index in range(len(model.stages)):
        stride = 4 if index == 0 else 2
        height, width = -(-height // stride), -(-width // stride)
        sizes.append((height, width))
    return sizes


def attention_maps(model, images, query, block=-1):
    """Attention weights of the query pixel ``query = (y, x)`` of ``images``
    (``[1, 3, H, W]``, normalized) at every stage of ``model``.

    The weights of block ``block`` of each stage (default: its last) are read from the
    model's own attention, :func:`paddle_pale.mode_attention` on the block's projections:
    the output of a query is ``sum_k w_k v_k`` per head, so the gradient of that output
    (summed over channels) with respect to V holds ``w_k`` of the query's head at every
    key ``k`` and channel of the head.

    Returns one dict per stage: ``stage``, ``block``, ``mode``, ``size`` (h, w),
    ``token`` (the query's token ``(y * h // H, x * w // W)``), ``weights``
    (``[heads, h, w]`` numpy) and ``groups``: ``[(label, head indices)]`` to average,
    the row and column halves, or all heads.
    """
    if images.ndim != 4 or images.shape[0] != 1:
        raise ValueError(f"attention_maps takes one image [1, 3, H, W], got {images.shape}")
    height, width = images.shape[2:]
    _check_query(query, height, width)
    captured = {}
    hooks = []
    for index, stage in enumerate(model.stages):
        layer = stage[block].attn
        hooks.append(layer.register_forward_pre_hook(
            lambda layer, inputs, index=index: captured.__setitem__(index, inputs[0])))
    model.eval()
    try:
        with paddle.no_grad():
            model.forward_features(images)
    finally:
        for hook in hooks:
            hook.remove()
    results = []
    for index, (h, w) in enumerate(_stage_sizes(model, height, width)):
        layer = model.stages[index][block].attn
        x = captured[index]
        assert tuple(x.shape[1:3]) == (h, w)
        with paddle.no_grad():
            q, k, v = (t.detach() for t in layer.qkv_projection(x))
        v.stop_gradient = False
        token = (query[0] * h // height, query[1] * w // width)
        out = mode_attention(q, k, v, layer.num_heads, layer.attention_mode, layer.region,
                             layer.block_index)
        out[0, token[0], token[1]].sum().backward()
        heads = layer.num_heads
        grad = v.grad.numpy()[0]  # [h, w, C]: w_k of channel c's head
        weights = grad.reshape(h, w, heads, -1).mean(-1).transpose(2, 0, 1)
        groups = layer.mode.head_groups(heads)
        results.append(dict(stage=index, block=block % len(model.stages[index]),
                            mode=layer.attention_mode, size=(h, w), token=token,
                            weights=weights, groups=groups))
    return results


def prepare_image(picture, size, mean, std):
    """``(pixels, images)``: the picture resized to ``size = (H, W)`` as uint8 RGB, and
    the normalized ``[1, 3, H, W]`` batch."""
    resized = picture.resize((size[1], size[0]), Image.BICUBIC)
    array = to_float_hwc(resized)
    for op in normalize_ops(mean, std):
        array = op(array)
    return np.asarray(resized), paddle.to_tensor(np.asarray(array)[None].astype("float32"))


def draw_attention(path, pixels, maps, query, title=None, dpi=100):
    """Write the attention picture: one row per stage, one column per head group, the
    heads-averaged weights over ``pixels`` (the image, ``[H, W, 3]`` uint8), tokens
    outside the region dimmed, the query pixel marked."""
    plt = pyplot()
    height, width = pixels.shape[:2]
    columns = max(len(m["groups"]) for m in maps)
    panel = 2.3  # inches high
    figure, axes = plt.subplots(len(maps), columns, squeeze=False, dpi=dpi,
                                figsize=(panel * columns * width / height + 0.3,
                                         (panel + 0.3) * len(maps) + 0.4))
    colormap = plt.get_cmap("inferno")
    for row, stage in zip(axes, maps):
        for ax, (label, heads) in zip(row, stage["groups"]):
            weights = stage["weights"][heads].mean(axis=0)
            peak = weights.max()
            overlay = colormap(weights / peak if peak > 0 else weights)
            overlay[..., 3] = np.where(weights > 0, 0.35 + 0.55 * weights / peak, 0.0)
            ax.imshow(pixels)
            # outside the region: dimmed
            outside = np.zeros(weights.shape + (4,))
            outside[..., 3] = np.where(weights > 0, 0.0, 0.55)
            extent = (0, width, height, 0)
            ax.imshow(outside, extent=extent, interpolation="nearest")
            ax.imshow(overlay, extent=extent, interpolation="nearest")
            ax.plot(query[1], query[0], marker="+", color="cyan", markersize=12, mew=2)
            h, w = stage["size"]
            ax.set_title(f"stage {stage['stage'] + 1} ({h}x{w}), block {stage['block'] + 1}: "
                         f"{label}", fontsize=7)
            ax.axis("off")
        for ax in row[len(stage["groups"]):]:
            ax.axis("off")
    if title:
        figure.suptitle(title, fontsize=8)
    figure.tight_layout(pad=0.4, rect=(0, 0, 1, 1 - (0.3 if title else 0) / figure.get_figheight()))
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def attention_picture(checkpoint, output, image="china", query=None, size=None, block=-1,
                      use_ema=True, dpi=100):
    """Load a training checkpoint (prefix or ``.pdparams``; its ``.pdstates`` gives the
    architecture, attention mode and normalization), run it on ``image`` resized to
    ``size = (H, W)`` (default: 224 high, the picture's aspect ratio) and write the
    attention picture of the query pixel ``query = (y, x)`` (default: the centre) to
    ``output``. Returns the maps of :func:`attention_maps`."""
    from .export import load_checkpoint

    model, meta = load_checkpoint(checkpoint, use_ema=use_ema)
    picture = load_picture(image)
    if size is None:
        size = (224, max(32, int(round(224 * picture.width / picture.height))))
    if query is None:
        query = (size[0] // 2, size[1] // 2)
    pixels, images = prepare_image(picture, size, meta["mean"], meta["std"])
    maps = attention_maps(model, images, query, block)
    mode = maps[0]["mode"]
    name = os.path.basename(str(checkpoint))
    draw_attention(output, pixels, maps, query,
                   f"{meta['variant']} ({mode}) {name}: attention of pixel {tuple(query)} "
                   f"on a {size[0]}x{size[1]} image, heads averaged per direction", dpi)
    return maps
