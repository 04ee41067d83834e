"""The CoordConv paper's coordinate regressors and its one-hot Not-so-Clevr input."""

from __future__ import annotations

import pytest
import torch

from conftest import epoch_records
from torch import nn

from harness.data import DATASETS
from harness.data.clevr import centres, render_onehot
from harness.models import build_model, count_parameters
from harness.space import Training
from harness.train import Trainer
from harness.trial import Trial


def test_onehot_input_is_one_at_the_centre_pixel_only():
    points = centres()[[0, 100, -1]]
    images = render_onehot(points)
    assert images.shape == (3, 1, 64, 64) and images.sum().item() == 3
    for image, (x, y) in zip(images, points.long().tolist()):
        assert image[0, y, x] == 1  # x along the width, as the square is drawn
    splits = DATASETS["clevr_quadrant_onehot"].load(None, val_size=300)
    square = DATASETS["clevr_quadrant"].load(None, val_size=300)
    assert torch.equal(splits.train_y, square.train_y) and torch.equal(splits.test_y, square.test_y)
    assert (splits.train_x.flatten(1).sum(1) == 1).all() and len(splits.test_y) == 729


def test_regressors_are_fully_convolutional_with_the_authors_widths():
    cc, plain = build_model("coordconv_regressor", (1, 64, 64), 2), build_model("conv_regressor", (1, 64, 64), 2)
    for model in (cc, plain):
        assert not any(isinstance(m, nn.Linear) for m in model.modules())
        assert [m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)] == [(1, 1)] * 3 + [(3, 3)] * 2
        assert model(torch.zeros(4, 1, 64, 64)).shape == (4, 2)
    # 1x1: (1 + 2 coordinate channels) -> 8, 8 -> 8, 8 -> 8; 3x3: 8 -> 8, 8 -> 2 (weights + biases)
    assert count_parameters(cc) == (3 * 8 + 8) + 2 * (64 + 8) + (576 + 8) + (144 + 2) == 906
    assert count_parameters(plain) == 906 - 16


def test_the_plain_regressor_cannot_see_where_the_object_is():
    torch.manual_seed(0)
    plain, cc = build_model("conv_regressor", (1, 64, 64), 2), build_model("coordconv_regressor", (1, 64, 64), 2)
    images = render_onehot(centres()[::97])
    out = plain(images)
    assert torch.allclose(out, out[:1].expand_as(out), atol=1e-5)  # the same answer at every position
    assert out.abs().max() < 1e-5  # and it starts at the centre of the canvas (the last bias absorbs the offset)
    # CoordConv starts the same way (its coordinate weights are zero) and learns how much position to use
    assert torch.allclose(cc(images), cc(images)[:1].expand_as(out), atol=1e-5)
    with torch.no_grad():
        cc.body[0].weight[:, 1:] = 1.0
    assert not torch.allclose(cc(images), cc(images)[:1].expand_as(out), atol=1e-3)


def _train(arch, splits, epochs):
    training = Training(optimizer="adam", lr=0.003, epochs=epochs, batch_size=32, val_size=100).model_dump(exclude={"seeds"})
    trainer = Trainer(Trial(architecture=arch, dataset="clevr_quadrant_onehot", seeds=(0,), training=training), splits)
    return epoch_records(trainer)[-1]


@pytest.mark.slow
def test_coordconv_regressor_generalises_to_the_held_out_quadrant_and_conv_does_not():
    """The paper's effect, reduced: 800 training positions, 14 epochs (a few minutes on 2 CPU cores)."""
    torch.set_num_threads(2)
    splits = DATASETS["clevr_quadrant_onehot"].load(None, val_size=100, train_limit=800, test_limit=300)
    cc, plain = _train("coordconv_regressor", splits, 14), _train("conv_regressor", splits, 3)
    assert cc["test_acc"] >= 0.9 and plain["test_acc"] <= 0.05
