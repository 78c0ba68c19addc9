import math

import pytest
import torch

from mpbench.config import Recipe
from mpbench.data import synthetic
from mpbench.registry import create_model
from mpbench.training.trainer import Diverged, load_checkpoint, lr_at, seed_everything, train


def test_lr_schedules():
    r = Recipe(epochs=10, lr=0.1, schedule="step", milestones=(3, 6), gamma=0.2)
    assert lr_at(0, 10, r) == 0.1 and lr_at(30, 10, r) == pytest.approx(0.02)
    assert lr_at(65, 10, r) == pytest.approx(0.004)
    c = Recipe(epochs=10, lr=0.1, schedule="cosine", warmup_epochs=1)
    assert lr_at(0, 10, c) == pytest.approx(0.01) and lr_at(9, 10, c) == pytest.approx(0.1)
    assert lr_at(55, 10, c) == pytest.approx(0.05 * (1 + math.cos(math.pi * 0.5)))


def _setup():
    seed_everything(0)
    data = synthetic(num_classes=4, num_train=64, num_test=32, image_size=16)
    model = create_model("cifar_resnet_tiny", width=4, num_classes=4)
    recipe = Recipe(epochs=3, batch_size=16, lr=0.05, schedule="cosine", deterministic=True)
    return data, model, recipe


def test_resume_reproduces_uninterrupted_training(tmp_path):
    data, model, recipe = _setup()
    straight = train(model, data, recipe, seed=0, progress=False)
    ref = {k: v.clone() for k, v in model.state_dict().items()}

    data, model, recipe = _setup()
    short = recipe.model_copy(update={"epochs": 3})
    # interrupt after epoch 2: train 2 epochs of the 3-epoch schedule by stopping in on_epoch
    class Stop(Exception):
        pass

    def stop_after_two(m):
        if m["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train(model, data, short, seed=0, checkpoint=tmp_path / "ck.pt", on_epoch=stop_after_two,
              progress=False)
    state = load_checkpoint(tmp_path / "ck.pt")
    assert state["epoch"] == 2
    seed_everything(123)  # a resumed process starts from unrelated RNG state
    fresh = create_model("cifar_resnet_tiny", width=4, num_classes=4)
    resumed = train(fresh, data, short, seed=0, resume=state, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, ref[k], rtol=0, atol=0, msg=k)
    assert resumed.history[-1]["test_top1"] == straight.history[-1]["test_top1"]


def test_training_learns_the_synthetic_task():
    seed_everything(0)
    data = synthetic(num_classes=4, num_train=256, num_test=64, image_size=16)
    model = create_model("cifar_resnet_tiny", width=8, num_classes=4)
    res = train(model, data, Recipe(epochs=4, batch_size=32, lr=0.05, schedule="cosine"),
                seed=0, progress=False)
    assert res.history[-1]["test_top1"] > 60  # chance is 25


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path):
    data, model, recipe = _setup()
    train(model, data, recipe.model_copy(update={"epochs": 2}), seed=0,
          checkpoint=tmp_path / "ck.pt", progress=False)
    assert (tmp_path / "ck.pt.prev").exists()
    (tmp_path / "ck.pt").write_bytes(b"PK\x03\x04 truncated")
    notes = []
    state = load_checkpoint(tmp_path / "ck.pt", log=notes.append)
    assert state["epoch"] == 1 and "unreadable" in notes[0]
    (tmp_path / "ck.pt.prev").write_bytes(b"")
    assert load_checkpoint(tmp_path / "ck.pt", log=notes.append) is None


def test_nan_loss_raises_diverged():
    data, model, recipe = _setup()
    with pytest.raises(Diverged):
        train(model, data, recipe.model_copy(update={"lr": 1e30}), seed=0, progress=False)


def test_channels_last_is_resolved_per_device_and_refused_where_it_crashes():
    from mpbench.errors import UserError
    from mpbench.training.device import use_channels_last

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    wide = create_model("cifar_resnet20", num_classes=10)  # projections from 16 channels
    narrow = create_model("cifar_resnet_tiny", width=4, num_classes=10)  # from 4 channels
    assert use_channels_last("auto", wide, cuda) and not use_channels_last("auto", wide, cpu)
    assert use_channels_last("on", wide, cpu) and use_channels_last(True, wide, cpu)
    assert not use_channels_last("off", wide, cuda) and not use_channels_last("auto", narrow, cpu)
    assert use_channels_last("on", narrow, cuda)
    with pytest.raises(UserError, match="strided 1x1 convolution"):
        use_channels_last("on", narrow, cpu)  # a heap corruption in oneDNN, not a slowdown
    with pytest.raises(UserError, match="channels_last"):
        use_channels_last("sometimes", wide, cpu)


def test_recipe_compile_wraps_the_training_forward_only(tmp_path, monkeypatch):
    compiled = []

    def fake_compile(module, **kw):  # stands in for torch.compile: records what it got
        compiled.append(module)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    data, model, recipe = _setup()
    train(model, data, recipe.model_copy(update={"epochs": 1, "compile": True}), seed=0,
          checkpoint=tmp_path / "ck.pt", progress=False)
    assert compiled == [model]
    state = load_checkpoint(tmp_path / "ck.pt")
    assert set(state["model"]) == set(model.state_dict())  # no _orig_mod. prefix
    assert "compile" not in Recipe().model_dump()  # off: old run fingerprints unchanged
    assert Recipe(compile=True).model_dump()["compile"] is True


@pytest.mark.slow
def test_compiled_training_runs_and_learns():
    data = synthetic(num_classes=4, num_train=256, num_test=64, image_size=16)
    model = create_model("cifar_resnet_tiny", width=8, num_classes=4)
    res = train(model, data, Recipe(epochs=3, batch_size=32, lr=0.05, schedule="cosine",
                                    compile=True), seed=0, progress=False)
    assert res.history[-1]["test_top1"] > 50  # chance is 25
