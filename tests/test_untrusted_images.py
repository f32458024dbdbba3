"""Images from strangers: a decompression bomb, or any file Pillow fails on, is an
unreadable image like the others, and a failing loader worker stops the trainer with
the sample named instead of hanging it."""
import os
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from engine_helpers import tiny_config, write_image_folder
from paddle_pale.data.transforms import ImageDecodeError, load_image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bomb(path):
    Image.new("1", (20000, 20000)).save(path)  # 48 KB, 400 M pixels once decoded
    return path


def test_a_decompression_bomb_is_an_unreadable_image(tmp_path):
    path = str(_bomb(tmp_path / "bomb.png"))
    with pytest.raises(ImageDecodeError, match="bomb.png.*DecompressionBombError"):
        load_image(path)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    # between 1x and 2x MAX_IMAGE_PIXELS Pillow only warns, then decodes everything
    path = tmp_path / "big.png"
    Image.new("L", (300, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 300 - 1)
    with pytest.warns(Image.DecompressionBombWarning), \
            pytest.raises(ImageDecodeError, match=r"300x300 = 90000 pixels"):
        load_image(str(path))


def _run(script, timeout=120):
    """Run ``script`` in a fresh interpreter (DataLoader workers, and a hang, stay there)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=ROOT))


def test_a_bomb_in_a_class_folder_is_skipped_and_named_and_the_epoch_finishes(tmp_path):
    write_image_folder(tmp_path / "data")
    bomb = _bomb(tmp_path / "data" / "class_1" / "bomb.png")
    config = tiny_config(tmp_path, tmp_path / "data", Global={"epochs": 1})
    run = _run(f"""
        from paddle_pale.engine.cli import train_main
        train_main(["-c", {config!r}, "-o", "DataLoader.Train.num_workers=2",
                    "-o", "DataLoader.Eval.num_workers=2"])
        """)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (tmp_path / "out" / "train.log").read_text()
    assert f"skipping unreadable sample: cannot decode image {str(bomb)!r}" in log
    assert "epoch 1/1 done" in log and "1 unreadable image(s) skipped" in log


def test_a_worker_that_fails_stops_the_trainer_naming_the_sample(tmp_path):
    write_image_folder(tmp_path / "data")
    config = tiny_config(tmp_path, tmp_path / "data", Global={"epochs": 1})
    # a preprocessing failure (not a bad file) in a worker process
    run = _run(f"""
        from paddle_pale.data import datasets
        from paddle_pale.engine.cli import train_main
        load = datasets.load_image
        def failing(path):  # hands the transforms something they cannot take
            return None if path.endswith("class_2/img_3.JPEG") else load(path)
        datasets.load_image = failing
        train_main(["-c", {config!r}, "-o", "DataLoader.Train.num_workers=2"])
        """)
    assert run.returncode != 0
    assert "preprocessing failed on" in run.stderr and "class_2/img_3.JPEG" in run.stderr
