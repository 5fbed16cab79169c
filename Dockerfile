# gradwatch: one image for the API, the migrations and the workers.
#   docker build -t gradwatch .                                   (CPU torch from its index)
#   make wheelhouse && docker build -t gradwatch --build-arg OFFLINE=1 .   (no network at all)
#   docker build -t gradwatch:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   docker build --build-arg BASE_IMAGE=registry.example.org/python:3.11-slim .   (a site's mirror)
# BASE_IMAGE is any Debian-like image with Python 3.11 and its venv module (the official
# Python image, or the base that `make compose-test` builds from Debian packages).
ARG BASE_IMAGE=python:3.11-slim

# -- build: a virtual environment in /opt/gradwatch, from an index or the wheelhouse --------
FROM ${BASE_IMAGE} AS build
# torch is installed first, so that the project's `torch>=2.2` is already met and pip never
# pulls the multi-GB CUDA build into a CPU image. OFFLINE=1 installs from wheelhouse/ only
# (`make wheelhouse` fills it on a machine with an index; a CUDA torch wheel goes there too:
# `make wheelhouse TORCH_SPEC="torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cu128"`).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG OFFLINE=0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/gradwatch
COPY wheelhouse /wheelhouse
RUN if [ "$OFFLINE" = 1 ]; then \
      /opt/gradwatch/bin/pip install --no-index --find-links /wheelhouse "torch==${TORCH_VERSION}"; \
    else \
      /opt/gradwatch/bin/pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"; \
    fi
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
# Editable, so that `gradwatch migrate` finds migrations/ and alembic.ini beside the code.
RUN if [ "$OFFLINE" = 1 ]; then \
      /opt/gradwatch/bin/pip install --no-index --find-links /wheelhouse -e .; \
    else \
      /opt/gradwatch/bin/pip install -e .; \
    fi

# -- run: the environment and the code, without the wheelhouse, pip's cache or a compiler --
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/gradwatch/bin:$PATH \
    GRADWATCH_HOME=/var/lib/gradwatch
COPY --from=build /opt/gradwatch /opt/gradwatch
COPY --from=build /app /app
RUN useradd --create-home --uid 1000 gradwatch \
 && mkdir -p /var/lib/gradwatch /datasets \
 && chown gradwatch /var/lib/gradwatch /datasets
USER gradwatch
WORKDIR /app

EXPOSE 8000
CMD ["gradwatch", "api", "--host", "0.0.0.0", "--port", "8000"]
