import pytest
import timm
import torch
import torch.nn as nn

from mpbench.registry import (Knob, UnknownModelError, create_model, get_entry, list_models,
                              register_model)


class _Toy(nn.Module):
    def __init__(self, width, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


@register_model(family="toy_family", knob=Knob("width", low=2, high=64, step=2), width=6)
def toy_registry_model(width=6, num_classes=10, in_chans=3):
    """A toy model registered from a test module."""
    return _Toy(width, num_classes)


def test_create_with_defaults_and_overrides():
    m = create_model("toy_registry_model", num_classes=7)
    assert m.conv.out_channels == 6 and m.fc.out_features == 7
    assert create_model("toy_registry_model", width=12).conv.out_channels == 12


def test_entry_records_family_knob_and_defaults():
    e = get_entry("toy_registry_model")
    assert e.family == "toy_family" and e.knob.name == "width" and e.defaults == {"width": 6}
    assert e.doc.startswith("A toy model")
    assert "toy_registry_model" in [x.name for x in list_models("toy_family")]


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownModelError) as err:
        create_model("cifar_resnet5")
    msg = str(err.value)
    assert "unknown model 'cifar_resnet5'" in msg and "cifar_resnet56" in msg
    assert "\n" not in msg


def test_timm_create_model_builds_registered_models():
    m = timm.create_model("cifar_resnet20", num_classes=10)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    t = timm.create_model("toy_registry_model", width=4)
    assert t.conv.out_channels == 4
    with pytest.raises(ValueError, match="no hub weights"):
        timm.create_model("cifar_resnet20", pretrained=True)


def _params(m):
    return sum(p.numel() for p in m.parameters())


def test_cifar_resnet_params_match_published_counts():
    # DESIGN.md §2 (osmr/imgclsmob: ResNet-56 861,620 params at 100 classes)
    assert _params(create_model("cifar_resnet56")) == 861_620
    assert abs(_params(create_model("cifar_resnet18")) - 11.22e6) / 11.22e6 < 0.005
