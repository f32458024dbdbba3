"""The ablation runner (tools/ablate.py): one training run per mode and pale size, the
table / CSV / chart, and resuming a sweep without retraining finished rows."""
import csv
import json
import os
import runpy

import matplotlib.image
import pytest

from engine_helpers import tiny_config, write_image_folder
from paddle_pale import ablation
from paddle_pale.engine import engine as engine_module
from paddle_pale.models.registry import create_model
from paddle_pale.utils.flops import attention_macs, count_params

from conftest import ROOT


@pytest.fixture
def recipe(tmp_path):
    write_image_folder(tmp_path / "data", per_class=4)
    # one epoch on 12 images of 16x16: a row takes a second or two
    return tiny_config(tmp_path, tmp_path / "data", Global={"epochs": 1})


def _count_engines(monkeypatch):
    started = []
    original = engine_module.Engine.__init__

    def init(self, config, *args, **kwargs):
        started.append(config)
        original(self, config, *args, **kwargs)
    monkeypatch.setattr(engine_module.Engine, "__init__", init)
    return started


def test_plan_has_one_row_per_mode_and_one_per_pale_size():
    rows = ablation.plan_rows({"name": "pale_t", "pale_size": 3},
                              ["axial", "cross_shaped", "pale_vanilla", "pale"],
                              [1, [3, 5], [1, 3, 5, 7], 3])
    assert [row["row"] for row in rows] == ["axial", "cross_shaped", "pale_vanilla_s3",
                                            "pale_s3", "pale_s1", "pale_s3x5", "pale_s1-3-5-7"]
    assert [row["pale_size"] for row in rows] == [None, None, 3, 3, 1, [3, 5], [1, 3, 5, 7]]
    # the config's row is in both tables and trained once, listed where each table asks
    assert rows[3]["tables"] == ["modes", "pale_sizes"]
    assert rows[3]["positions"] == {"modes": 3, "pale_sizes": 3}
    assert [row["positions"] for row in rows[4:]] == [{"pale_sizes": i} for i in range(3)]
    assert [row["tables"] for row in rows[:3] + rows[4:]] == [["modes"]] * 3 + \
        [["pale_sizes"]] * 3
    # defaults: the config's mode and size (Pale-T's 7 when the config names none)
    assert ablation.plan_rows({"name": "pale_t", "attention_mode": "pale_vanilla"}) == [
        {"row": "pale_vanilla_s7", "mode": "pale_vanilla", "pale_size": 7,
         "tables": ["modes"], "positions": {"modes": 0}}]
    assert [r["row"] for r in ablation.plan_rows(
        {"name": "pale_t", "attention_mode": "pale_sequential"}, None, [2, 4])] == [
        "pale_sequential_s2", "pale_sequential_s4"]
    assert [ablation.parse_pale_size(t) for t in ("7", "3x5", "1,3,5,7", "3x5,7,7,7")] == [
        7, [3, 5], [1, 3, 5, 7], [[3, 5], 7, 7, 7]]
    with pytest.raises(ValueError, match="pale size is an int"):
        ablation.parse_pale_size("seven")
    with pytest.raises(ValueError, match="unknown attention mode 'swin'"):
        ablation.plan_rows({"name": "pale_t"}, ["swin"])


def test_one_command_trains_each_row_and_writes_table_csv_and_chart(recipe, tmp_path,
                                                                    monkeypatch):
    started = _count_engines(monkeypatch)
    output = str(tmp_path / "ablation")
    tool = runpy.run_path(os.path.join(ROOT, "tools", "ablate.py"), run_name="ablate")
    # the recipe's pale size is 2: rows axial, pale_s2 (both tables), pale_s1
    tool["main"](["-c", recipe, "--modes", "axial", "pale", "--pale-sizes", "1", "2",
                  "--output", output, "--batch", "4", "--repeats", "1", "--title", "tiny"])
    assert [(c["Arch"]["attention_mode"], c["Arch"]["pale_size"]) for c in started] == [
        ("axial", 2), ("pale", 2), ("pale", 1)]
    with open(os.path.join(output, "ablation.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(row["row"], row["tables"]) for row in rows] == [
        ("axial", "modes"), ("pale_s2", "modes pale_sizes"), ("pale_s1", "pale_sizes")]
    assert list(rows[0]) == list(ablation.COLUMNS)
    for row, config in zip(rows, started):
        # params and FLOPs: those of the row's model, counted independently here
        arch = {k: v for k, v in config["Arch"].items() if k != "name"}
        model = create_model("pale_t", **arch)
        assert int(row["params"]) == count_params(model)
        assert (int(row["macs"]), int(row["attention_macs"])) == attention_macs(model, (16, 16))
        assert 0.0 <= float(row["top1"]) <= 1.0 and float(row["best_top1"]) >= 0.0
        assert float(row["infer_images_per_s"]) > 0 and float(row["train_images_per_s"]) > 0
        result = json.load(open(os.path.join(output, row["row"], "result.json")))
        assert result["epochs"] == 1 and result["resumed_from_epoch"] == 0
        assert os.path.isfile(os.path.join(output, row["row"], "latest.pdparams"))
    assert [json.loads(row["pale_size"]) for row in rows] == [[[2, 2]] * 4, [[2, 2]] * 4,
                                                              [[1, 1]] * 4]
    table = open(os.path.join(output, "ablation.md")).read().splitlines()
    assert [line for line in table if line.startswith("#")] == [
        "### Attention modes (Table 6)", "### Pale sizes (Table 5)"]
    assert table[0] == "tiny" and len([line for line in table if line.startswith("| ")]) == 6
    assert table[6].startswith("| axial | 1 line | ")
    assert table[7].startswith("| pale | 2 2 2 2 | ")
    # Table 5 lists the sizes in the order asked for: 1, then 2
    assert table[13].startswith("| pale | 1 1 1 1 | ")
    assert table[14].startswith("| pale | 2 2 2 2 | ")
    assert table[16].startswith("top-1: after the last epoch")
    picture = matplotlib.image.imread(os.path.join(output, "ablation.png"))
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.std() > 0.01


def test_a_finished_row_is_not_retrained_and_a_new_row_is(recipe, tmp_path, monkeypatch):
    output = str(tmp_path / "ablation")
    first, _ = ablation.run_ablation(recipe, [], ["pale"], None, output, batch=4, repeats=1)
    started = _count_engines(monkeypatch)
    results, _ = ablation.run_ablation(recipe, [], ["pale", "cross_shaped"], None, output,
                                       batch=4, repeats=1)
    assert [config["Arch"]["attention_mode"] for config in started] == ["cross_shaped"]
    # read back; only the img/s are measured again, for all rows in the same rounds
    measured = ("infer_images_per_s", "train_images_per_s")
    assert {k: v for k, v in results[0].items() if k not in measured} == \
        {k: v for k, v in first[0].items() if k not in measured}
    assert all(r[key] > 0 for r in results for key in measured)
    # the same row under another recipe is trained again
    started.clear()
    ablation.run_ablation(recipe, ["Optimizer.weight_decay=0.01"], ["pale"], None, output,
                          batch=4, repeats=1)
    assert len(started) == 1 and started[0]["Global"]["resume"] is None


def test_an_interrupted_row_resumes_from_its_latest_checkpoint(recipe, tmp_path,
                                                               monkeypatch):
    output = str(tmp_path / "ablation")
    ablation.run_ablation(recipe, [], ["axial"], None, output, batch=4, repeats=1)
    os.remove(os.path.join(output, "axial", "result.json"))  # killed before the result
    started = _count_engines(monkeypatch)
    results, _ = ablation.run_ablation(recipe, [], ["axial"], None, output, batch=4,
                                       repeats=1)
    assert started[0]["Global"]["resume"] == os.path.join(output, "axial", "latest")
    assert results[0]["resumed_from_epoch"] == 1  # no epoch trained twice
