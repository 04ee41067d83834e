import pytest
import torch

from harness.models import MODELS, build_model, count_parameters, localization_parameters
from harness.models.coordconv import CoordConv2d, coordinate_channels

# Hand-counted: convnet 260 + 5,020 + 16,050 + 510; the localization net adds 400 + 2,010 + 2,912 + 198;
# CoordConv adds 2 input channels to each convolution (+2·10·25 and +2·20·25 weights).
EXPECTED_PARAMS = {"convnet": 21_840, "stnet": 27_360, "coordconv": 23_340, "stcoordconv": 28_860}
SMALL = sorted(EXPECTED_PARAMS)  # the ResNeXt models are tested on their own, in test_workloads.py


@pytest.mark.parametrize("name", SMALL)
def test_output_shape_and_parameter_count(name):
    model = build_model(name, (1, 28, 28), 10)
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    assert count_parameters(model) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("shape,classes", [((1, 42, 42), 10), ((3, 64, 64), 7)])
def test_same_code_serves_other_input_shapes(name, shape, classes):
    model = build_model(name, shape, classes)
    assert model(torch.randn(2, *shape)).shape == (2, classes)


@pytest.mark.parametrize("name", SMALL)
def test_every_parameter_is_used(name):
    model = build_model(name, (1, 28, 28), 10)
    if localization_parameters(model):  # the identity init zeroes the last layer's weight: perturb it
        torch.nn.init.normal_(model.stn.fc_loc[2].weight, std=0.1)
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert unused == []


def test_coordinate_channels_span_minus_one_to_one():
    c = coordinate_channels(2, 5, 7, with_r=True)
    assert c.shape == (2, 3, 5, 7)
    xx, yy, rr = c[0]
    assert torch.allclose(xx[0], torch.linspace(-1, 1, 7)) and torch.allclose(xx[:, 3], torch.zeros(5), atol=1e-6)
    assert torch.allclose(yy[:, 0], torch.linspace(-1, 1, 5))
    assert torch.allclose(rr, torch.sqrt(xx**2 + yy**2))


def test_coordconv_sees_position():
    """A CoordConv on an all-zero input still gives position-dependent output; a plain conv cannot."""
    layer = CoordConv2d(1, 4, kernel_size=1, bias=False)
    out = layer(torch.zeros(1, 1, 6, 6))
    assert out[0, :, 0, 0].ne(out[0, :, 5, 5]).any()
    assert layer.conv.in_channels == 3
    assert CoordConv2d(1, 4, kernel_size=1, with_r=True).conv.in_channels == 4
    assert count_parameters(build_model("coordconv", (1, 28, 28), 10, with_r=True)) == 21_840 + 3 * 250 + 3 * 500


@pytest.mark.parametrize("name", ["stnet", "stcoordconv"])
def test_spatial_transformer_starts_as_identity(name):
    model = build_model(name, (1, 28, 28), 10)
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(model.transform(x), x, atol=1e-5)
    assert torch.allclose(model.stn.theta(x), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(3, 2, 3))


def test_localization_parameters_are_their_own_group():
    model = build_model("stnet", (1, 28, 28), 10)
    loc = localization_parameters(model)
    assert sum(p.numel() for p in loc) == EXPECTED_PARAMS["stnet"] - EXPECTED_PARAMS["convnet"]
    assert localization_parameters(build_model("convnet", (1, 28, 28), 10)) == []


def test_unknown_architecture_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed: conv_regressor, convnet, coordconv, coordconv_regressor, resnext, stcoordconv, stnet, stresnext"):
        build_model("resnet", (1, 28, 28), 10)
