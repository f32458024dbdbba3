"""A tiny COCO-format instance segmentation set written to disk for detection tests."""
import json
import os

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = [{"id": 1, "name": "square", "supercategory": "shape"},
              {"id": 3, "name": "triangle", "supercategory": "shape"}]


def _photo_crops(num_images, size, rng):
    """Crops of sklearn's sample photos (real image statistics, no download)."""
    from sklearn.datasets import load_sample_images
    photos = load_sample_images().images
    height, width = size
    crops = []
    for index in range(num_images):
        photo = photos[index % len(photos)]
        top = rng.integers(0, photo.shape[0] - 2 * height)
        left = rng.integers(0, photo.shape[1] - 2 * width)
        crop = Image.fromarray(photo[top:top + 2 * height, left:left + 2 * width])
        crops.append(crop.resize((width, height), Image.BILINEAR))
    return crops


def _polygon_area(points):
    xs, ys = np.asarray(points[0::2]), np.asarray(points[1::2])
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


def _shapes(height, width, rng):
    """A filled square and a filled triangle at random places, as COCO polygons."""
    side = int(rng.integers(min(height, width) // 4, min(height, width) // 2))
    x0, y0 = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
    square = [x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]
    base = int(rng.integers(min(height, width) // 4, min(height, width) // 2))
    x1, y1 = int(rng.integers(0, width - base)), int(rng.integers(base, height))
    triangle = [x1, y1, x1 + base, y1, x1 + base // 2, y1 - base]
    return [(1, square, (230, 40, 40)), (3, triangle, (40, 40, 230))]


def write_tiny_coco(root, num_images=4, size=(96, 128), seed=0):
    """Write ``root/images/*.jpg`` and ``root/annotations.json``; the shapes are
    painted into the pixels, so boxes and masks describe what the image shows.

    Returns ``dict(dataset_dir, image_dir, anno_path)`` as ppdet's COCODataSet takes.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    height, width = size
    images, annotations = [], []
    for image_id, crop in enumerate(_photo_crops(num_images, size, rng), start=1):
        draw = ImageDraw.Draw(crop)
        for category_id, polygon, color in _shapes(height, width, rng):
            draw.polygon(polygon, fill=color)
            xs, ys = polygon[0::2], polygon[1::2]
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=category_id,
                segmentation=[[float(v) for v in polygon]], area=_polygon_area(polygon),
                bbox=[float(min(xs)), float(min(ys)), float(max(xs) - min(xs)),
                      float(max(ys) - min(ys))],
                iscrowd=0))
        file_name = f"{image_id:04d}.jpg"
        crop.save(os.path.join(root, "images", file_name), quality=95)
        images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
    with open(os.path.join(root, "annotations.json"), "w") as f:
        json.dump(dict(images=images, annotations=annotations, categories=CATEGORIES), f)
    return dict(dataset_dir=str(root), image_dir="images", anno_path="annotations.json")
