"""Weights and checkpoints from strangers are read without running code from them: a
pickle calling anything outside what paddle.save writes is refused, through every entry
point that takes a file, while every file the trainer writes still loads as paddle.load
reads it."""
import collections
import os
import pickle
import runpy

import numpy as np
import paddle
import pytest

from engine_helpers import TINY_ARCH, tiny_config, write_image_folder
from paddle_pale.engine import Engine
from paddle_pale.engine.config import load_config
from paddle_pale.models.registry import create_model
from paddle_pale.utils import safe_pickle
from paddle_pale.utils.io import CHECKPOINT_SUFFIXES, checkpoint_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_ARGS = {k: v for k, v in TINY_ARCH.items() if k != "name"}


class _Payload:
    """What a malicious file holds: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _write_payload(path, marker, state=None):
    """A file shaped like ``state`` (a dict) with one value replaced by the payload."""
    state = dict(state or {"patch_embeds.0.proj.weight": np.zeros([2], "float32")})
    state[next(iter(state))] = _Payload(marker)
    with open(path, "wb") as f:
        pickle.dump(state, f, protocol=4)


def _globals_of(path):
    """(module, name) of every global a (trusted) pickle looks up."""
    found = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)
    with open(path, "rb") as f:
        Recording(f, encoding="latin1").load()
    return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real run's output (EMA on): the checkpoint files the trainer writes."""
    tmp_path = tmp_path_factory.mktemp("run")
    write_image_folder(tmp_path / "data")
    config = tiny_config(tmp_path, tmp_path / "data", Global={"epochs": 1},
                         EMA={"enable": True, "decay": 0.9})
    Engine(load_config(config, []), mode="train").train()
    return tmp_path


def _assert_same(expected, got, where=""):
    if isinstance(expected, paddle.Tensor):
        assert isinstance(got, paddle.Tensor), where
        assert (expected.name, expected.dtype) == (got.name, got.dtype), where
        np.testing.assert_array_equal(expected.numpy(), got.numpy(), err_msg=where)
        return
    assert type(expected) is type(got), where
    if isinstance(expected, dict):
        assert list(expected) == list(got), where
        for key in expected:
            _assert_same(expected[key], got[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(got), where
        for index, (e, g) in enumerate(zip(expected, got)):
            _assert_same(e, g, f"{where}[{index}]")
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(expected, got, err_msg=where)
    else:
        assert expected == got, where


@pytest.mark.parametrize("suffix", CHECKPOINT_SUFFIXES)
def test_every_file_the_trainer_writes_loads_as_paddle_load_reads_it(trained, suffix):
    path = checkpoint_files(trained / "out" / "latest")[suffix]
    assert _globals_of(path) <= set(safe_pickle.ALLOWED_GLOBALS)
    _assert_same(paddle.load(path), safe_pickle.load(path))


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_what_paddle_save_writes_with_any_protocol_loads_alike(tmp_path, protocol):
    state = create_model("pale_t", **MODEL_ARGS).state_dict()
    paddle.save(state, str(tmp_path / "w.pdparams"), protocol=protocol)
    _assert_same(paddle.load(str(tmp_path / "w.pdparams")),
                 safe_pickle.load(tmp_path / "w.pdparams"))
    # not a state dict: tensors pickled as (name, array) tuples, numpy scalars, ...
    obj = {"model": {"w": paddle.ones([2, 3])}, "lr": np.float32(0.5), "step": 3,
           "order": collections.OrderedDict(a=[1, 2.5, "x", None]), "t": [paddle.zeros([1])]}
    paddle.save(obj, str(tmp_path / "mixed.pdstates"), protocol=protocol)
    _assert_same(paddle.load(str(tmp_path / "mixed.pdstates")),
                 safe_pickle.load(tmp_path / "mixed.pdstates"))


def test_codecs_encode_is_admitted_only_as_pickle_writes_bytes(tmp_path):
    import codecs

    class Decoding:
        def __reduce__(self):
            return codecs.encode, ("x", "rot13")
    path = tmp_path / "codec.pdstates"
    with open(path, "wb") as f:
        pickle.dump({"a": Decoding()}, f, protocol=2)
    with pytest.raises(safe_pickle.UnsafePickleError, match="rot13"):
        safe_pickle.load(path)


def test_the_refusal_names_the_file_and_the_global_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    _write_payload(tmp_path / "evil.pdparams", marker)
    with pytest.raises(safe_pickle.UnsafePickleError) as error:
        safe_pickle.load(tmp_path / "evil.pdparams")
    assert str(tmp_path / "evil.pdparams") in str(error.value)
    assert f"{os.system.__module__}.system" in str(error.value)  # posix.system
    assert not marker.exists()


class _ObjectArray:
    """An object array built by calling ndarray itself (not numpy's own pickling)."""

    def __reduce__(self):
        return np.ndarray, ((2,), "O")


@pytest.mark.parametrize("array", [np.array([1, "x"], dtype=object), _ObjectArray()])
def test_arrays_of_python_objects_are_refused(tmp_path, array):
    path = tmp_path / "objects.pdparams"
    with open(path, "wb") as f:
        pickle.dump({"w": array}, f)
    with pytest.raises(safe_pickle.UnsafePickleError, match="Python objects"):
        safe_pickle.load(path)


def _create_model(path):
    create_model("pale_t", pretrained=str(path), **MODEL_ARGS)


def _eval_tool(path):
    from paddle_pale.engine.cli import eval_main
    data = path.parent / "data"
    write_image_folder(data, per_class=1)
    eval_main(["-c", tiny_config(path.parent, data), "-o", f"Global.pretrained={path}"])


def _export_tool(path):
    tool = runpy.run_path(os.path.join(ROOT, "tools", "export.py"), run_name="export_tool")
    tool["main"](["backbone", "--checkpoint", str(path), "--model", "pale_t",
                  "--output", str(path.parent / "backbone")])


def _seg_backbone(path):
    from paddle_pale.adapters.paddleseg import PaleTransformer
    PaleTransformer(arch="pale_t", pretrained=str(path), **{
        k: v for k, v in MODEL_ARGS.items() if k != "num_classes"})


def _det_backbone(path):
    from paddle_pale.adapters.ppdet import PaleTransformer
    PaleTransformer(arch="pale_t", pretrained=str(path), **{
        k: v for k, v in MODEL_ARGS.items() if k != "num_classes"})


@pytest.mark.parametrize("entry_point", [_create_model, _eval_tool, _export_tool,
                                         _seg_backbone, _det_backbone])
def test_a_weights_file_with_a_payload_is_refused_by_every_entry_point(tmp_path, entry_point,
                                                                       capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pdparams"
    _write_payload(path, marker)
    with pytest.raises((ValueError, SystemExit)) as error:
        entry_point(path)
    message = str(error.value) + capsys.readouterr().err
    assert "refusing to load" in message and "evil.pdparams" in message
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pdopt", ".pdstates", ".pdema"])
def test_resume_refuses_a_checkpoint_file_with_a_payload(trained, tmp_path, suffix):
    source = trained / "out"
    run = tmp_path / "run"
    run.mkdir()
    for name in CHECKPOINT_SUFFIXES:
        with open(checkpoint_files(source / "latest")[name], "rb") as f:
            (run / ("latest" + name)).write_bytes(f.read())
    marker = tmp_path / "ran"
    _write_payload(run / ("latest" + suffix), marker,
                   safe_pickle.load(run / ("latest" + suffix)))
    config = tiny_config(tmp_path, trained / "data", Global={"epochs": 2},
                         EMA={"enable": True, "decay": 0.9})
    with pytest.raises(ValueError, match="refusing to load") as error:
        Engine(load_config(config, [f"Global.resume={run / 'latest'}"]), mode="train")
    assert "latest" + suffix in str(error.value)
    assert not marker.exists()


def test_a_checkpoint_with_the_old_pickled_random_states_resumes_without_unpickling(
        trained, tmp_path, caplog):
    import base64
    import logging
    run = tmp_path / "run"
    run.mkdir()
    for name in CHECKPOINT_SUFFIXES:
        with open(checkpoint_files(trained / "out" / "latest")[name], "rb") as f:
            (run / ("latest" + name)).write_bytes(f.read())
    states = safe_pickle.load(run / "latest.pdstates")
    marker = tmp_path / "ran"
    states["rng_states"] = [base64.b64encode(pickle.dumps(_Payload(marker))).decode("ascii")]
    paddle.save(states, str(run / "latest.pdstates"))
    config = tiny_config(tmp_path, trained / "data", Global={"epochs": 2},
                         EMA={"enable": True, "decay": 0.9})
    with caplog.at_level(logging.WARNING, logger="paddle_pale"):
        engine = Engine(load_config(config, [f"Global.resume={run / 'latest'}"]), mode="train")
    assert engine.start_epoch == 1
    assert "old pickled form" in caplog.text
    assert not marker.exists()
