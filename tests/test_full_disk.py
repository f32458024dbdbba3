"""A save that fails for lack of space or permission stops training with one line naming
the directory, the free space and the checkpoint kept; it leaves nothing behind, and the
kept checkpoint resumes."""
import errno
import os
import subprocess

import paddle
import pytest

from engine_helpers import tiny_config, write_image_folder
from paddle_pale.engine import CheckpointSaveError, Engine
from paddle_pale.engine.cli import train_main
from paddle_pale.engine.config import load_config


@pytest.fixture
def config(tmp_path):
    write_image_folder(tmp_path / "data")
    return tiny_config(tmp_path, tmp_path / "data", Global={"epochs": 2})


def _fail_saves_after(monkeypatch, saves_allowed, code):
    """paddle.save writes ``saves_allowed`` files, then fails as a full disk does, after
    writing part of the file (a real ENOSPC leaves a truncated file)."""
    real_save, calls = paddle.save, []

    def save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > saves_allowed:
            with open(path, "wb") as f:
                f.write(b"\x80\x04partial")
            raise OSError(code, os.strerror(code), path)
        return real_save(obj, path, *args, **kwargs)
    monkeypatch.setattr(paddle, "save", save)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, config,
                                                                      monkeypatch, capsys, code):
    out = tmp_path / "out"
    # no evaluation, so no best: epoch 1 writes latest's 3 files, epoch 2's first fails
    _fail_saves_after(monkeypatch, 3, code)
    with pytest.raises(SystemExit) as exit_info:
        train_main(["-c", config, "-o", "DataLoader.Eval.dataset.root="])
    message = str(exit_info.value.code)
    assert message.startswith("train.py: error: cannot save checkpoint latest of epoch 2 in "
                              f"{out}: {os.strerror(code)} (")
    assert " free)" in message and "\n" not in message
    assert f"The last good checkpoint is kept: {out / 'latest'} (epoch 1)" in message
    assert f"-o Global.resume={out / 'latest'}" in message
    # nothing of the failed save is left: only the live checkpoint's files and links
    entries = sorted(os.listdir(out))
    assert [e for e in entries if e.startswith(".latest.ckpt.")] == [
        os.readlink(out / ".latest.ckpt")]
    assert not [e for e in entries if ".tmp" in e]
    monkeypatch.undo()
    resumed = Engine(load_config(config, [f"Global.resume={out / 'latest'}",
                                          "DataLoader.Eval.dataset.root="]), mode="train")
    assert resumed.start_epoch == 1


def test_a_failure_other_than_space_or_permission_is_not_disguised(config, monkeypatch):
    _fail_saves_after(monkeypatch, 0, errno.EIO)
    with pytest.raises(OSError) as error:
        Engine(load_config(config, ["DataLoader.Eval.dataset.root="]), mode="train").train()
    assert not isinstance(error.value, CheckpointSaveError)
    assert error.value.errno == errno.EIO


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MB file system (tmpfs); skipped where mounting is not allowed."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", str(folder)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_real_full_disk_stops_the_run_and_the_kept_checkpoint_resumes(tmp_path, small_disk,
                                                                       monkeypatch):
    write_image_folder(tmp_path / "data")
    out = small_disk / "out"
    config = tiny_config(tmp_path, tmp_path / "data",
                         Global={"epochs": 2, "output_dir": str(out)})
    engine = Engine(load_config(config, ["DataLoader.Eval.dataset.root="]), mode="train")
    train_epoch = engine._train_one_epoch

    def fill_the_disk_after_epoch_one(epoch):
        if epoch == 1:  # leave half a checkpoint of space for epoch 2's save
            size = sum(os.path.getsize(os.path.join(out, ".latest.ckpt", name))
                       for name in os.listdir(out / ".latest.ckpt"))
            stats = os.statvfs(out)
            with open(small_disk / "filler", "wb") as f:
                f.write(b"\0" * (stats.f_bavail * stats.f_frsize - size // 2))
        return train_epoch(epoch)
    engine._train_one_epoch = fill_the_disk_after_epoch_one
    with pytest.raises(CheckpointSaveError, match=r"No space left on device \(\d+\.\d KB free\)"
                                                  r".*kept: .*latest \(epoch 1\)"):
        engine.train()
    assert not [e for e in os.listdir(out) if ".tmp" in e]
    assert [e for e in os.listdir(out) if e.startswith(".latest.ckpt.")] == [
        os.readlink(out / ".latest.ckpt")]
    os.remove(small_disk / "filler")
    resumed = Engine(load_config(config, [f"Global.resume={out / 'latest'}",
                                          "DataLoader.Eval.dataset.root="]), mode="train")
    assert resumed.start_epoch == 1
