# gradwatch: one image for the API, the migrations and the workers.
#   docker build -t gradwatch .                                   (CPU torch, small)
#   docker build -t gradwatch:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim

# torch is installed first, from the index the build arg names, so that the project's
# `torch>=2.2` is already met and pip never pulls the multi-GB CUDA build into a CPU image.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADWATCH_HOME=/var/lib/gradwatch

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
# Editable, so that `gradwatch migrate` finds migrations/ and alembic.ini beside the code.
RUN pip install -e . \
 && useradd --create-home --uid 1000 gradwatch \
 && mkdir -p /var/lib/gradwatch /datasets \
 && chown gradwatch /var/lib/gradwatch /datasets
USER gradwatch

EXPOSE 8000
CMD ["gradwatch", "api", "--host", "0.0.0.0", "--port", "8000"]
