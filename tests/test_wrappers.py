"""st(X), coordconv(X) and tv:NAME: against today's stnet / coordconv, unchanged at step 0, composable."""

import pytest
import torch
from torch import nn

from harness.models import ARCHITECTURES, build_model, count_parameters, localization_parameters
from harness.models.stn import STModel
from harness.models.wrappers import CoordTerm, add_coordinates

X28 = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def seeded(name, shape=(1, 28, 28), classes=10, seed=0, **options):
    torch.manual_seed(seed)
    return build_model(name, shape, classes, **options).eval()


def test_st_convnet_is_todays_stnet():
    """Same parameter count, same parameters for the same seed, so the same initial output."""
    ours, today = seeded("st(convnet)"), seeded("stnet")
    assert count_parameters(ours) == count_parameters(today) == 27_360
    assert ours.state_dict().keys() == today.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), today.state_dict().values()))
    assert torch.equal(ours(X28), today(X28))
    assert sum(p.numel() for p in localization_parameters(ours)) == 27_360 - 21_840
    assert ARCHITECTURES["st(convnet)"].localization and not ARCHITECTURES["coordconv(convnet)"].localization


def test_coordconv_convnet_against_todays_coordconv():
    """Today's ``coordconv`` concatenates coordinates to every convolution's input; ``coordconv(convnet,
    layers: all)`` adds a coordinate convolution instead. Same parameter count, and the same function: today's
    weights split into the image part and the coordinate part reproduce today's output exactly. Only the
    initialisation differs: ours starts with zero coordinate weights (it is convnet at step 0)."""
    today, ours = seeded("coordconv"), seeded("coordconv(convnet)", layers="all")
    assert count_parameters(ours) == count_parameters(today) == 23_340
    with torch.no_grad():
        for layer in ("conv1", "conv2"):
            src, dst = getattr(today, layer).conv, getattr(ours, layer)
            c = dst.conv.in_channels
            dst.conv.weight.copy_(src.weight[:, :c]); dst.conv.bias.copy_(src.bias)
            dst.coord.weight.copy_(src.weight[:, c:])
        for layer in ("fc1", "fc2"):
            getattr(ours, layer).load_state_dict(getattr(today, layer).state_dict())
    torch.testing.assert_close(ours(X28), today(X28), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,options", [("coordconv(convnet)", {}), ("coordconv(convnet)", {"layers": "all"}),
                                          ("coordconv(convnet)", {"with_r": True, "layers": "all"}),
                                          ("coordconv(tv:resnet18)", {"layers": "all"})])
def test_coordconv_is_unchanged_at_step_zero(name, options):
    base = name[len("coordconv("):-1]
    shape = (3, 32, 32) if "tv:" in base else (1, 28, 28)
    wrapped, plain = seeded(name, shape, **options), seeded(base, shape)
    x = torch.randn(2, *shape)
    assert torch.equal(wrapped(x), plain(x))
    wrapped.train(); plain.train()  # BatchNorm's batch statistics too (dropout drawn alike)
    outs = [(torch.manual_seed(5), m(x))[1] for m in (wrapped, plain)]
    assert torch.equal(*outs)
    wrapped(x).sum().backward()  # and the coordinate term learns from the first step
    terms = [m for m in wrapped.modules() if isinstance(m, CoordTerm)]
    assert terms and all(t.coord.weight.grad.abs().sum() > 0 for t in terms)


def test_coordconv_first_or_all_layers():
    first = seeded("coordconv(tv:resnet18)", (3, 32, 32))
    every = seeded("coordconv(tv:resnet18)", (3, 32, 32), layers="all")
    convs = sum(isinstance(m, nn.Conv2d) for m in seeded("tv:resnet18", (3, 32, 32)).modules())
    assert sum(isinstance(m, CoordTerm) for m in first.modules()) == 1
    assert sum(isinstance(m, CoordTerm) for m in every.modules()) == convs
    with pytest.raises(ValueError, match="layers"):
        seeded("coordconv(convnet)", layers="some")


def test_grouped_and_depthwise_convolutions():
    """Every group sees the coordinates: the term equals a per-group CoordConv whose coordinate weights are it."""
    for groups in (4, 8):  # grouped, depthwise
        conv = nn.Conv2d(8, 8, 3, padding=1, groups=groups)
        term = CoordTerm(conv)
        nn.init.normal_(term.coord.weight)
        x = torch.randn(2, 8, 6, 9)
        out = term(x)
        assert out.shape == (2, 8, 6, 9)
        coords = add_coordinates(nn.Sequential(nn.Conv2d(2, 8, 3, padding=1, bias=False)))[0]  # only the term
        coords.conv.weight.data.copy_(term.coord.weight)
        expected = conv(x) + coords.conv(torch.stack(torch.meshgrid(torch.linspace(-1, 1, 6), torch.linspace(-1, 1, 9),
                                                                    indexing="ij")[::-1])[None])
        torch.testing.assert_close(out, expected)
    model = seeded("coordconv(tv:resnext50_32x4d)", (3, 32, 32), classes=5, layers="all")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_non_square_inputs():
    """Coordinates follow the input's own height and width."""
    term = CoordTerm(nn.Conv2d(1, 2, 1, bias=False))
    nn.init.zeros_(term.conv.weight)
    term.coord.weight.data[:] = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1)  # out = (x, y)
    out = term(torch.zeros(1, 1, 3, 5))
    torch.testing.assert_close(out[0, 0, 0], torch.linspace(-1, 1, 5))
    torch.testing.assert_close(out[0, 1, :, 0], torch.linspace(-1, 1, 3))
    for name in ("st(coordconv(convnet))", "coordconv(st(convnet))"):
        assert seeded(name, (1, 36, 60), layers="all")(torch.randn(2, 1, 36, 60)).shape == (2, 10)


def test_composition():
    model = seeded("st(coordconv(tv:resnet18))", (1, 40, 48), classes=7)
    assert isinstance(model, STModel) and model(torch.randn(2, 1, 40, 48)).shape == (2, 7)
    assert len(list(localization_parameters(model))) == 8
    x = torch.randn(2, 1, 40, 48)
    torch.testing.assert_close(model.transform(x), x, atol=1e-5, rtol=0)  # identity transformer at step 0
    inner = seeded("coordconv(st(convnet))", layers="all")  # coordconv leaves the localization network alone
    assert not any(isinstance(m, CoordTerm) for m in inner.stn.modules())
    assert sum(isinstance(m, CoordTerm) for m in inner.classifier.modules()) == 2
    twice = seeded("st(st(convnet))")
    assert sum(p.numel() for p in localization_parameters(twice)) == 2 * (27_360 - 21_840)
    assert ARCHITECTURES["st(coordconv(tv:resnet18))"].options == ["weights", "layers", "with_r", "loc_size"]


def test_torchvision_input_and_head():
    torch.manual_seed(0)
    grey = seeded("tv:resnet18", (1, 32, 32), classes=3)
    assert grey.conv1.in_channels == 1 and grey.fc.out_features == 3
    assert seeded("tv:mobilenet_v3_small", (3, 32, 32), classes=4)(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_greyscale_keeps_pretrained_first_convolution():
    """Summed colour weights on a grey image give the colour filter's response to R = G = B."""
    from harness.models.torchvision import adapt_input

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    colour = model[0].weight.detach().clone()
    grey = torch.randn(1, 1, 5, 5)
    expected = model(grey.expand(1, 3, 5, 5))
    adapt_input(model, 1)
    assert model[0].in_channels == 1
    torch.testing.assert_close(model(grey), expected)
    torch.testing.assert_close(model[0].weight, colour.sum(1, keepdim=True))


def test_canonical_spec_fills_defaults_and_resolves_weights():
    spec = ARCHITECTURES["st(tv:resnet18)"].canonical({"weights": "DEFAULT"})
    assert spec == {"wrapper": "st", "options": {"loc_size": None},
                    "inner": {"target": "torchvision:resnet18", "options": {"weights": "IMAGENET1K_V1"}}}
    assert ARCHITECTURES["coordconv(convnet)"].canonical({}) == {
        "wrapper": "coordconv", "options": {"layers": "first", "with_r": False},
        "inner": {"target": "harness:convnet", "options": {"dropout": True}}}
    with pytest.raises(ValueError, match="weights"):
        ARCHITECTURES["tv:resnet18"].canonical({"weights": "NOPE"})


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "squeezenet1_0"])
def test_head_replacement_as_for_pretrained_models(name):
    """What a pretrained model gets (its weights need a download, not available here): the 1000-way head re-made
    with num_classes outputs, everything before it untouched."""
    import torchvision.models as tvm

    from harness.models.torchvision import replace_head

    model = tvm.get_model(name, weights=None).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    replace_head(model, 7)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    changed = {k for k, v in model.state_dict().items() if k not in before or not torch.equal(before[k], v)}
    assert len(changed) <= 2  # the head's weight and bias only
