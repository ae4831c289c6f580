# breastcls on a CUDA GPU machine (e.g. an NVIDIA T4 with trainer=t4).
#   docker build -t breastcls .
#   docker run --gpus all -v /path/to/data:/data breastcls trainer=t4 seed=0
# PyPI's standard torch 2.13.0 Linux wheel carries its own CUDA runtime, so a slim Python base
# image suffices; the host needs only the NVIDIA driver and the container toolkit.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BREASTCLS_DATA_DIR=/data

WORKDIR /app
COPY requirements/constraints.txt requirements/constraints.txt
RUN pip install -c requirements/constraints.txt torch===2.13.0 torchvision===0.28.0
COPY pyproject.toml README.md ./
COPY breastcls breastcls
COPY conf conf
COPY hydra_plugins hydra_plugins
RUN pip install -c requirements/constraints.txt -e .

VOLUME ["/data", "/app/logs", "/app/multirun_sweeps"]
ENTRYPOINT ["python", "-m", "breastcls.train"]
