"""Dataset registry: a name maps to an object of the ``Dataset`` contract (``harness/data/base.py``): name,
task, input shape, number of outputs, convergence target, ``prepare``, ``split_sizes`` and ``load``.

Adding a built-in dataset is one file with such an object and one line here; a search space's own datasets
(``plugins.datasets``, or the ``stbench.datasets`` entry points it names) are found on lookup, from ``PLUGINS``
(``harness.plugins.activate`` fills it).
"""

from .base import DATA_DIR_ENV, Dataset, ImageSplits, resolve_data_dir, validation_split
from .clevr import CLEVR_QUADRANT, CLEVR_QUADRANT_ONEHOT, CLEVR_UNIFORM, CLEVR_UNIFORM_ONEHOT
from .cub import CUB200, CUB200_BBOX
from .distorted import MNIST_E, MNIST_P, MNIST_R, MNIST_RTS
from .mnist import FASHION_MNIST, MNIST

BUILTINS: dict[str, Dataset] = {
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
PLUGINS: dict[str, Dataset] = {}


class _Registry(dict):
    """The built-ins; a plugin dataset of the active space on lookup (iterating lists the built-ins)."""

    def __missing__(self, name: str) -> Dataset:
        return PLUGINS[name]

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or name in PLUGINS


DATASETS: dict[str, Dataset] = _Registry(BUILTINS)

__all__ = ["BUILTINS", "DATASETS", "PLUGINS", "DATA_DIR_ENV", "Dataset", "ImageSplits", "resolve_data_dir", "validation_split"]
