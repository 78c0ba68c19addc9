"""User models from the user's own module: suite plugins and entry points."""
import importlib.metadata
import sys
import uuid

import pandas as pd
import pytest
import timm

from mpbench import plugins
from mpbench.errors import UserError
from mpbench.plugins import load_entry_points, load_plugins
from mpbench.registry import create_model, get_entry, list_models

PLUGIN = '''\
import torch.nn as nn
from mpbench.registry import Knob, register_model

LOADS = globals().get("LOADS", 0) + 1


class TinyNet(nn.Module):
    def __init__(self, width=8, num_classes=10, in_chans=3):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


@register_model(name="{name}", family="user_tiny", knob=Knob("width", low=2, high=256), width=8)
def tiny_net(width=8, num_classes=10, in_chans=3):
    """A user's model, registered from a module outside mpbench."""
    return TinyNet(width, num_classes, in_chans)
'''


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))


def _plugin(directory, filename=None):
    """Write a plugin module; return (module name, registered model name)."""
    tag = uuid.uuid4().hex[:8]
    module = filename or f"user_models_{tag}"
    model = f"user_tiny_{tag}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(PLUGIN.replace("{name}", model))
    return module, model


def test_module_plugin_next_to_the_suite_registers_a_model(tmp_path):
    module, model = _plugin(tmp_path)
    suite = tmp_path / "suite.yaml"
    [mod] = load_plugins([module], source=str(suite))
    assert mod.__name__ == module
    net = create_model(model, num_classes=5, width=4)
    assert net.fc.out_features == 5 and net.conv.out_channels == 4
    assert timm.create_model(model, num_classes=3).fc.out_features == 3
    entry = get_entry(model)
    assert entry.family == "user_tiny" and entry.knob.name == "width"
    assert model in [e.name for e in list_models("user_tiny")]


def test_py_path_is_relative_to_the_suite_and_imported_once(tmp_path):
    module, model = _plugin(tmp_path / "models")
    source = str(tmp_path / "suite.yaml")
    [first] = load_plugins([f"models/{module}.py"], source=source)
    [again] = load_plugins([f"models/{module}.py"], source=source)
    assert first is again and first.LOADS == 1
    assert create_model(model).fc.out_features == 10


def test_unknown_plugin_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as err:
        load_plugins(["no_such_plugin_module_xyz"], source="suites/s.yaml")
    assert str(err.value) == ("suites/s.yaml: plugins[0]: cannot import "
                              "'no_such_plugin_module_xyz': No module named "
                              "'no_such_plugin_module_xyz'")
    assert "\n" not in str(err.value)
    source = str(tmp_path / "s.yaml")
    with pytest.raises(UserError, match=r": plugins\[1\]: cannot import 'gone\.py': "
                                        r"no such file: .*gone\.py$"):
        load_plugins(["json", "gone.py"], source=source)
    assert load_plugins([], source=source) == []


def test_plugin_that_fails_while_importing_names_the_error(tmp_path):
    (tmp_path / "broken_plugin_abc.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    with pytest.raises(UserError) as err:
        load_plugins(["broken_plugin_abc"], source=str(tmp_path / "s.yaml"))
    assert str(err.value).endswith("plugins[0]: cannot import 'broken_plugin_abc': "
                                   "RuntimeError: boom second line")
    assert "broken_plugin_abc" not in sys.modules


def test_entry_points_are_imported_and_broken_ones_warned_about(tmp_path, monkeypatch):
    module, model = _plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    group = plugins.ENTRY_POINT_GROUP
    fake = [importlib.metadata.EntryPoint("good", module, group),
            importlib.metadata.EntryPoint("bad", "no_such_ep_module_q", group)]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [ep for ep in fake if ep.group == group])
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    with pytest.warns(RuntimeWarning, match="'bad = no_such_ep_module_q'.*skipped"):
        assert load_entry_points() == ["good"]
    assert create_model(model).conv.out_channels == 8
    assert load_entry_points() == []  # once per process


def test_plugin_model_declared_in_a_suite_appears_in_the_results(tmp_path):
    from mpbench.cli import main

    module, model = _plugin(tmp_path)
    suite = tmp_path / "s.yaml"
    suite.write_text(f"""\
name: plug
dataset: {{name: synthetic, num_classes: 4, num_train: 32, num_test: 16, image_size: 8}}
recipe: {{epochs: 1, batch_size: 16, eval_batch_size: 16, lr: 0.05, schedule: constant}}
plugins: [{module}.py]
models:
  - {{name: {model}, args: {{width: 4}}}}
""")
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert list(results.model) == [model] and list(results.status) == ["done"]
