# The image every cluster node runs (cluster.yaml's docker.image), and the main job on one GPU machine:
#   docker build -t stbench .
#   docker run --gpus all -v $PWD/datasets:/home/ray/datasets -v $PWD/results:/home/ray/stbench/results stbench
# The base is Ray's own GPU image at the pinned Ray version (CUDA-capable, Python 3.11, non-root user "ray");
# torch's PyPI wheels bring their CUDA libraries, so the host needs only the NVIDIA driver.
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py311-gpu

WORKDIR /home/ray/stbench

# Dependencies first: this layer is rebuilt only when the pins change.
COPY --chown=ray:users requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

# Then the project itself (small, changes often).
COPY --chown=ray:users pyproject.toml README.md run_benchmark.py cluster.yaml ./
COPY --chown=ray:users harness ./harness
COPY --chown=ray:users analysis ./analysis
COPY --chown=ray:users search_spaces ./search_spaces
RUN pip install --no-cache-dir --no-deps -e .

# Your own plugin package (targets "package.module:NAME", or entry points in the stbench.architectures /
# stbench.datasets groups) must be importable on every node: install it here, after the project, e.g.
#   COPY --chown=ray:users mylab ./mylab
#   RUN pip install --no-cache-dir ./mylab
# A plugin file next to the search space ("models.py:NAME") needs nothing here: its text travels with the trials.

USER ray
ENV STBENCH_DATA_DIR=/home/ray/datasets \
    WANDB_MODE=offline
CMD ["python", "run_benchmark.py"]
