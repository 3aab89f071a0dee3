"""Training and evaluation CLIs end to end on a tiny synthetic split: logs, checkpoints, resume, determinism."""

import dataclasses
import json
import subprocess
import sys

import pytest

from hbci.evaluate import main as eval_main
from hbci.train import main as train_main

pytestmark = pytest.mark.slow

TINY = ["model.num_frames=4", "model.max_words=16", "model.temporal_layers=1", "model.num_segments=2",
        "model.num_phrases=2", "model.concepts=4", "train.epochs=2", "train.batch_size=8", "train.eval_batch_size=16"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from hbci.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=1, n_train=32, n_val=10, n_test=10, frames=8, size=32)
    return root


def run_train(synth, out, *extra):
    return train_main(["small", f"data.root={synth}", f"train.out_dir={out}", *TINY, *extra, "--no-progress"])


def _train_losses(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss_total"]) for r in records if r["kind"] == "train"]


def test_train_writes_log_checkpoints_plot_and_result(synth, tmp_path):
    out = tmp_path / "run"
    assert run_train(synth, out) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"train", "epoch", "test"} <= {r["kind"] for r in records}
    assert sum(r["kind"] == "train" for r in records) == 2 * (32 // 8)
    for name in ("last.pt", "best.pt", "final.pt", "curves.png", "config.json", "result.json"):
        assert (out / name).is_file(), name
    result = json.loads((out / "result.json").read_text())
    assert set(result["test"]["t2v"]) >= {"R@1", "R@5", "R@10", "MdR", "MnR"}


def test_training_is_deterministic_and_an_interrupted_run_resumes_exactly(synth, tmp_path, monkeypatch):
    import hbci.train

    a, b = tmp_path / "a", tmp_path / "b"
    assert run_train(synth, a) == 0
    calls = {"n": 0}
    real_evaluate = hbci.train.evaluate

    def interrupt_second_validation(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(hbci.train, "evaluate", interrupt_second_validation)
    assert run_train(synth, b) == 130      # Ctrl-C during epoch 2's validation: epoch 1 is in last.pt
    monkeypatch.setattr(hbci.train, "evaluate", real_evaluate)
    assert run_train(synth, b) == 0        # resumes at epoch 2
    steps_a = _train_losses(a)
    steps_b = dict(_train_losses(b))       # the resumed epoch-2 steps overwrite the interrupted ones
    assert [loss for _, loss in steps_a] == [steps_b[step] for step, _ in steps_a]


def test_resume_of_a_finished_run_trains_no_more(synth, tmp_path):
    out = tmp_path / "r"
    assert run_train(synth, out) == 0
    before = (out / "metrics.jsonl").read_text()
    assert run_train(synth, out) == 0
    new = [json.loads(line) for line in (out / "metrics.jsonl").read_text()[len(before):].splitlines()]
    assert not any(r["kind"] == "train" for r in new)


def test_unknown_override_is_a_clear_error(capsys, synth, tmp_path):
    assert run_train(synth, tmp_path / "x", "train.epochz=3") == 2
    err = capsys.readouterr().err
    assert "train.epochz" in err and "train.epochs" in err and "Traceback" not in err


def test_partial_window_negatives_are_trained_on(synth, tmp_path):
    out = tmp_path / "partial"
    assert run_train(synth, out, "model.partial_window_negatives=true", "train.epochs=1") == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    terms = [r["loss_temporal_partial"] for r in steps if r["kind"] == "train"]
    assert len(terms) == 32 // 8 and any(t > 0 for t in terms)


def test_rendered_order_negatives_are_trained_on_and_need_named_videos(synth, tmp_path, capsys):
    import csv

    out = tmp_path / "rendered"
    assert run_train(synth, out, "model.rendered_order_negatives=true", "train.epochs=1") == 0
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    terms = [r["loss_temporal_rendered"] for r in steps if r["kind"] == "train"]
    assert len(terms) == 32 // 8 and any(t > 0 for t in terms)
    assert "training items have their scene with the events swapped" in capsys.readouterr().err
    with (synth / "train.csv").open(newline="") as fh:  # the same split without the column
        rows = [{k: v for k, v in row.items() if k != "order_negative"} for row in csv.DictReader(fh)]
    with (synth / "unnamed.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code = run_train(synth, tmp_path / "unnamed", "model.rendered_order_negatives=true", "data.train_split=unnamed")
    err = capsys.readouterr().err
    assert code == 2 and "names an order_negative video" in err and "Traceback" not in err


def test_eval_cli_prints_both_directions(synth, tmp_path, capsys):
    out = tmp_path / "e"
    assert run_train(synth, out, "train.epochs=1") == 0
    capsys.readouterr()
    assert eval_main([str(out / "final.pt"), "--data", str(synth), "--split", "test"]) == 0
    printed = capsys.readouterr().out
    assert "t2v" in printed and "v2t" in printed and "R@1" in printed and "DSL" in printed


def test_eval_against_compares_on_the_same_queries(synth, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "e"
    assert run_train(synth, out, "train.epochs=1") == 0
    capsys.readouterr()
    args = [str(out / "final.pt"), "--data", str(synth), "--split", "test", "--json"]
    assert eval_main([*args, "--against", str(out / "final.pt")]) == 0
    same = json.loads(capsys.readouterr().out)["against"]
    assert same["variants"]  # the synthetic split's hard-negative pairs, compared pair by pair
    for r in [same["t2v"], *same["variants"].values()]:
        assert r["difference"] == r["se_paired"] == r["a_only"] == r["b_only"] == 0
    assert eval_main([*args, "--against", str(tiny_checkpoint)]) == 0  # a random model of the same shape
    result = json.loads(capsys.readouterr().out)
    for direction in ("t2v", "v2t"):
        r = result["against"][direction]
        assert r["R@1 a"] == pytest.approx(result[direction]["R@1"])
        assert r["difference"] == pytest.approx(r["R@1 a"] - r["R@1 b"])
        assert (r["a_only"] - r["b_only"]) == pytest.approx(r["difference"] * r["n"] / 100)


def test_eval_against_a_model_of_other_frames_is_a_clear_error(synth, tmp_path, tiny_checkpoint, capsys):
    from hbci.checkpoint import load_model, save_checkpoint
    from hbci.model import HBCI

    _, experiment, _ = load_model(tiny_checkpoint)
    config = dataclasses.replace(experiment.model, num_frames=2)
    save_checkpoint(tmp_path / "two.pt", dataclasses.replace(experiment, model=config), HBCI(config))
    code = eval_main([str(tiny_checkpoint), "--data", str(synth), "--split", "test", "--against",
                      str(tmp_path / "two.pt")])
    assert code == 2
    assert "cannot be compared" in capsys.readouterr().err


def test_eval_cli_on_a_missing_checkpoint_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hbci.evaluate", str(tmp_path / "none.pt"), "--data", "x"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "checkpoint not found" in result.stderr and "Traceback" not in result.stderr


def test_ablation_rows_share_data_and_budget_and_keep_the_table_order(synth, tmp_path, capsys):
    from hbci.ablation import ROWS
    from hbci.ablation import main as ablate_main

    out = tmp_path / "ablation"
    assert ablate_main(["small", f"data.root={synth}", *TINY, "train.epochs=1", "--out", str(out), "--rows", "3,1",
                        "--no-progress"]) == 0
    table = (out / "ablation.md").read_text().splitlines()
    assert [line.split(" | ")[0].lstrip("| ") for line in table[2:]] == [ROWS[0][0], ROWS[2][0]]  # ROWS order
    configs = [json.loads((out / f"row{i}" / "config.json").read_text()) for i in (1, 3)]
    assert configs[0]["model"]["temporal_layers"] == 0 and configs[0]["model"]["video_pooling"] == "mean"
    assert configs[1]["model"]["video_pooling"] == "text_guided" and configs[1]["model"]["levels"] == [3]
    assert configs[0]["train"] == {**configs[1]["train"], "out_dir": configs[0]["train"]["out_dir"]}
    assert capsys.readouterr().out.strip().splitlines()[-len(table):] == table


def test_param_groups_scale_the_backbone_and_its_image_tower():
    from hbci.config import ModelConfig, TrainConfig
    from hbci.model import HBCI
    from hbci.train import param_groups
    from tests.conftest import TINY_MODEL

    model = HBCI(ModelConfig(**TINY_MODEL))
    cfg = TrainConfig(lr=1e-3, backbone_lr_scale=0.5, vision_lr_scale=0.1)
    lr_of = {id(p): g["lr"] for g in param_groups(model, cfg) for p in g["params"]}
    expected = {name: 1e-3 * (0.05 if name.startswith("clip.visual.") else 0.5 if name.startswith("clip.") else 1.0)
                for name, p in model.named_parameters() if p.requires_grad}
    assert {name: lr_of[id(p)] for name, p in model.named_parameters() if p.requires_grad} == pytest.approx(expected)
    assert any(n.startswith("clip.visual.") for n in expected) and any(not n.startswith("clip.") for n in expected)
    with pytest.raises(Exception, match="vision_lr_scale"):
        TrainConfig(vision_lr_scale=0)


def test_frozen_image_blocks_keep_their_weights_while_the_rest_trains(synth, tmp_path):
    import torch

    from hbci.checkpoint import read_checkpoint
    from hbci.config import config_from_dict
    from hbci.distributed import Distributed
    from hbci.train import _build_model

    out = tmp_path / "run"
    assert run_train(synth, out, "train.vision_frozen_blocks=2") == 0
    config = config_from_dict(json.loads((out / "config.json").read_text()))
    start = _build_model(config, Distributed()).state_dict()  # the same seed gives the weights training began from
    trained = read_checkpoint(out / "final.pt")["model"]
    frozen = ("clip.visual.conv1.", "clip.visual.ln_pre.", "clip.visual.class_embedding",
              "clip.visual.positional_embedding", "clip.visual.transformer.resblocks.0.",
              "clip.visual.transformer.resblocks.1.")
    changed = {name for name in start if not torch.equal(start[name], trained[name])}
    assert not {name for name in changed if name.startswith(frozen)}
    assert any(name.startswith("clip.visual.transformer.resblocks.2.") for name in changed)
    assert any(name.startswith("clip.visual.ln_post") for name in changed)
    assert any(not name.startswith("clip.") for name in changed)


def test_freezing_more_image_blocks_than_exist_is_a_clear_error():
    import torch

    from hbci.backbone import create_backbone, freeze_image_layers
    from hbci.config import TrainConfig

    clip = create_backbone("hbci-tiny", None)
    blocks = len(clip.visual.transformer.resblocks)
    freeze_image_layers(clip, blocks)
    assert not any(p.requires_grad for p in clip.visual.transformer.parameters())
    assert clip.visual.ln_post.weight.requires_grad and clip.transformer.resblocks[0].attn.in_proj_weight.requires_grad
    with pytest.raises(Exception, match=f"has {blocks} blocks"):
        freeze_image_layers(create_backbone("hbci-tiny", None), blocks + 1)
    with pytest.raises(Exception, match="vision_frozen_blocks"):
        TrainConfig(vision_frozen_blocks=-1)
    convnet = torch.nn.Module()
    convnet.visual = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))  # a ResNet-like tower: no residual blocks
    with pytest.raises(Exception, match="needs a ViT image tower"):
        freeze_image_layers(convnet, 1)
