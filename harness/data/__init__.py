"""Dataset registry: a name maps to an object of the ``Dataset`` contract (``harness/data/base.py``): name,
task, input shape, number of outputs, convergence target, ``prepare``, ``split_sizes`` and ``load``.

Adding a dataset is one file with such an object and one line here.
"""

from .base import DATA_DIR_ENV, Dataset, ImageSplits, resolve_data_dir, validation_split
from .clevr import CLEVR_QUADRANT, CLEVR_QUADRANT_ONEHOT, CLEVR_UNIFORM, CLEVR_UNIFORM_ONEHOT
from .cub import CUB200, CUB200_BBOX
from .distorted import MNIST_E, MNIST_P, MNIST_R, MNIST_RTS
from .mnist import FASHION_MNIST, MNIST

DATASETS: dict[str, Dataset] = {
    "mnist": MNIST,
    "fashion_mnist": FASHION_MNIST,
    "mnist_r": MNIST_R,
    "mnist_rts": MNIST_RTS,
    "mnist_p": MNIST_P,
    "mnist_e": MNIST_E,
    "clevr_uniform": CLEVR_UNIFORM,
    "clevr_quadrant": CLEVR_QUADRANT,
    "clevr_uniform_onehot": CLEVR_UNIFORM_ONEHOT,
    "clevr_quadrant_onehot": CLEVR_QUADRANT_ONEHOT,
    "cub200": CUB200,
    "cub200_bbox": CUB200_BBOX,
}

__all__ = ["DATASETS", "DATA_DIR_ENV", "Dataset", "ImageSplits", "resolve_data_dir", "validation_split"]
