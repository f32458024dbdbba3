from .transforms import build_eval_transform, load_image
