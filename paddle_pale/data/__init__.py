"""Data: data sets (ImageNet folders, PaddleClas list files, the digits demo), image
decoding, the eval preprocessing and the training augmentation (timm's RandAugment,
Mixup/CutMix, random erasing). May import the ground layer (``utils``), never the
model.
"""
from .builder import build_dataloader, build_dataset
from .datasets import IGNORE_LABEL, ImageFolderDataset, ImageListDataset
from .mixup import Mixup
from .token_labels import LabelMaps, MixToken, TokenLabelDataset, TokenLabelTransform
from .train_transforms import BatchNormalize, build_train_transform
from .transforms import build_eval_transform, load_image
