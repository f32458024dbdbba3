"""The paths a newcomer follows through the tools, in a temp dir: the commands printed at
the end of a run reproduce it, resume never writes into another run's folder, a
finished run resumed does nothing, eval builds the checkpoint's model, and a user's
mistake in any tool is one ``error:`` line with exit status 2."""
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from engine_helpers import tiny_config, write_image_folder
from paddle_pale.utils.tool import call_tool


def _tool_main(name):
    import runpy
    return runpy.run_path(os.path.join(ROOT, "tools", name + ".py"), run_name=name)["main"]


def _run(name, argv):
    """Run tools/NAME.py's main as its command line does -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code, program = 0, sys.argv[0]
    sys.argv[0] = name + ".py"  # argparse's prog
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            call_tool(_tool_main(name), argv)
        except SystemExit as exit_info:
            code = exit_info.code
        finally:
            sys.argv[0] = program
    return code, out.getvalue(), err.getvalue()


def _printed(stdout, label):
    """The argv of the command printed after ``label:`` (``python tools/X.py ...``)."""
    line = next(line for line in stdout.splitlines() if line.startswith(label + ":"))
    words = shlex.split(line.split(":", 1)[1])
    assert words[0] == "python" and words[1].startswith("tools/"), line
    return os.path.basename(words[1])[:-3], words[2:]


def _files(folder):
    """Contents of the checkpoint files of ``folder`` (links followed)."""
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder))
            if name.split(".")[-1] in ("pdparams", "pdopt", "pdstates")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("newcomer")
    write_image_folder(root / "data", per_class=4)
    return root, tiny_config(root, root / "data", Global={"epochs": 1})


def test_printed_commands_reproduce_the_run(setup, monkeypatch):
    root, config = setup
    monkeypatch.chdir(root)
    walk = root / "walk"
    code, stdout, err = _run("train", ["-c", config, "-o", f"Global.output_dir={walk}",
                                       "-o", "Arch.attention_mode=axial"])
    assert code == 0, err
    # the resolved config of the run is in its folder, and the printed commands name it
    assert (walk / "config.yaml").is_file()
    tool, argv = _printed(stdout, "evaluate it")
    assert tool == "eval" and argv[:2] == ["-c", str(walk / "config.yaml")]
    val_loss = float(re.findall(r"val: top1 [\d.]+, top2 [\d.]+, loss ([\d.]+)",
                                (walk / "train.log").read_text())[-1])
    code, eval_out, err = _run(tool, argv)
    assert code == 0, err
    # the axial model, as trained: the same loss as training's validation
    assert float(re.search(r"loss: ([\d.]+)", eval_out).group(1)) == pytest.approx(
        val_loss, abs=1e-4)

    tool, argv = _printed(stdout, "train longer")
    argv = [arg.replace("Global.epochs=N", "Global.epochs=2") for arg in argv]
    code, stdout, err = _run(tool, argv)
    assert code == 0, err
    assert "resumed from" in stdout and "epoch 2/2" in stdout
    import paddle
    assert paddle.load(str(walk / "latest.pdstates"))["epoch"] == 2
    assert not (root / "out").exists()  # the config file's own output_dir is untouched

    # the run is finished: resuming it again says so and writes nothing
    before = _files(walk)
    stamp = os.stat(walk / "config.yaml").st_mtime_ns
    code, stdout, err = _run(tool, argv)
    assert code == 0, err
    assert "already trained 2 of 2 epochs" in stdout
    assert "best val top-1" not in stdout and "epoch 3" not in stdout
    assert _files(walk) == before and os.stat(walk / "config.yaml").st_mtime_ns == stamp


def test_training_never_writes_into_another_runs_folder(setup, monkeypatch):
    root, config = setup
    monkeypatch.chdir(root)
    demo, other = root / "demo", root / "other"
    assert _run("train", ["-c", config, "-o", f"Global.output_dir={demo}"])[0] == 0
    assert _run("train", ["-c", config, "-o", f"Global.output_dir={other}"])[0] == 0
    kept = _files(demo)
    # the walk: resuming the other run with a config whose output_dir is demo
    code, _, err = _run("train", ["-c", str(demo / "config.yaml"), "-o", "Global.epochs=2",
                                  "-o", f"Global.resume={other / 'latest'}"])
    assert code == 0, err
    assert _files(demo) == kept
    # a fresh run into a folder holding a run: refused, naming that run
    code, _, err = _run("train", ["-c", config, "-o", f"Global.output_dir={demo}"])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: ")
    assert "holds the checkpoints of another run" in err and "1 of 1 epochs" in err
    assert "Global.overwrite=True" in err
    # resuming one run into the folder of another (explicit output_dir): refused too
    code, _, err = _run("train", ["-c", config, "-o", f"Global.output_dir={demo}",
                                  "-o", f"Global.resume={other / 'latest'}",
                                  "-o", "Global.epochs=3"])
    assert code == 2 and "another run" in err
    assert _files(demo) == kept
    # the explicit override replaces it
    code, _, err = _run("train", ["-c", config, "-o", f"Global.output_dir={demo}",
                                  "-o", "Global.overwrite=True"])
    assert code == 0, err
    assert _files(demo) != kept


def test_eval_builds_the_checkpoints_architecture(setup, monkeypatch):
    root, config = setup
    monkeypatch.chdir(root)
    run = root / "axial"
    assert _run("train", ["-c", config, "-o", f"Global.output_dir={run}",
                          "-o", "Arch.attention_mode=axial"])[0] == 0
    best = f"Global.pretrained={run / 'best'}"
    # the config says pale; the checkpoint says axial, and wins
    code, stdout, err = _run("eval", ["-c", config, "-o", best])
    assert code == 0, err
    assert "building the checkpoint's architecture (attention_mode=axial)" in stdout
    code, reference, _ = _run("eval", ["-c", str(run / "config.yaml"), "-o", best])
    assert re.findall(r"loss: [\d.]+", stdout) == re.findall(r"loss: [\d.]+", reference)
    assert "evaluated" in (run / "eval.log").read_text()  # beside the checkpoint
    # an -o Arch that contradicts the record names both
    code, _, err = _run("eval", ["-c", config, "-o", best, "-o", "Arch.attention_mode=pale"])
    assert code == 2
    assert "Arch.attention_mode='pale'" in err and "attention_mode='axial'" in err


# one user mistake per tool (the seg/det tools need their libraries)
MISTAKES = {
    "train": ["-c", "missing.yaml"],
    "eval": ["-c", "CONFIG"],  # no Global.pretrained
    "export": ["onnx", "--checkpoint", "missing/best", "--output", "x"],
    "predict": ["--model", "missing", "a.png"],
    "flops": ["--model", "pale_x"],
    "visualize": ["attention", "--checkpoint", "missing/best"],
    "ablate": ["-c", "missing.yaml", "--modes", "pale"],
    "benchmark": ["--batch", "0"],
    "token_labels": ["--checkpoint", "missing/best", "--root", "missing", "--output", "x"],
    "train_seg": ["--config", "missing.yml"],
    "val_seg": ["--config", "missing.yml", "--model_path", "m.pdparams"],
    "export_seg": ["--config", "missing.yml"],
    "flops_seg": ["--config", "missing.yml"],
    "train_det": ["-c", "missing.yml"],
    "eval_det": ["-c", "missing.yml"],
    "export_det": ["-c", "missing.yml"],
}


def test_every_tool_has_a_mistake_case():
    tools = {name[:-3] for name in os.listdir(os.path.join(ROOT, "tools"))
             if name.endswith(".py")}
    assert tools == set(MISTAKES)


@pytest.mark.parametrize("tool", sorted(MISTAKES))
def test_a_user_mistake_is_one_error_line_and_exit_2(tool, setup, monkeypatch):
    if tool.endswith("_seg"):
        pytest.importorskip("paddleseg")
    if tool.endswith("_det"):
        pytest.importorskip("ppdet")
    root, config = setup
    monkeypatch.chdir(root)
    argv = [config if arg == "CONFIG" else arg for arg in MISTAKES[tool]]
    code, _, err = _run(tool, argv)
    assert code == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{tool}.py: error: "), err
    assert "Traceback" not in err


def test_export_seg_without_weights_is_refused_unless_asked():
    pytest.importorskip("paddleseg")
    config = os.path.join(ROOT, "configs", "seg", "upernet_pale_t_ade20k_512x512_160k.yml")
    code, _, err = _run("export_seg", ["--config", config, "--save_dir", "unused"])
    assert code == 2 and "no --model_path" in err and "--random_weights" in err
    assert not os.path.exists("unused")


def test_a_bug_keeps_its_traceback_and_debug_shows_a_mistakes():
    def buggy(argv):
        return {}["missing"]

    with pytest.raises(KeyError):
        call_tool(buggy, [], prog="x.py")

    def deep_value_error(argv):
        return np.zeros(2).reshape(3)  # a ValueError raised inside numpy: our bug

    with pytest.raises(ValueError):
        call_tool(deep_value_error, [], prog="x.py")
    from paddle_pale.engine.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="missing.yaml"):  # --debug: the whole traceback
        call_tool(lambda argv: load_config("missing.yaml"), ["--debug"], prog="x.py")


def test_a_bad_config_run_prints_only_the_error(tmp_path):
    """The whole stderr of a bad-config run, start-up included: one line."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c",
                           os.path.join(ROOT, "configs", "demo.yaml"), "-o",
                           "Loss.label_smoothing=2"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr == ("train.py: error: Loss.label_smoothing must be a number in "
                           "[0.0, 1.0), got 2\n")
    assert done.stdout == ""
