"""stbench: benchmark Spatial Transformer and CoordConv classifiers with Ray Tune."""

__version__ = "0.1.0"
