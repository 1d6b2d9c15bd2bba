# syntax=docker/dockerfile:1
#
# dropship container image.
#   docker build -t dropship .
#   docker run --rm -p 8000:8000 -e DROPSHIP_SECRET_KEY=... -e DROPSHIP_DATABASE_URL=... dropship
# The same image runs `dropship serve` (default), `dropship worker` and `dropship migrate`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --------------------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# Use the image's interpreter (never download one), copy files out of uv's cache instead of
# hard-linking them (the cache is a separate mount), and pre-compile bytecode for faster start-up.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies only: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# The project itself (installed editable into /app/.venv, pointing at /app: the final stage keeps
# the same paths).
COPY dropship/ ./dropship/
COPY app/ ./app/
COPY connectors/ ./connectors/
COPY workers/ ./workers/
COPY migrations/ ./migrations/
COPY alembic.ini ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

# --------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}

RUN groupadd --system --gid 10001 dropship \
    && useradd --system --uid 10001 --gid dropship --no-create-home \
        --home-dir /app --shell /usr/sbin/nologin dropship

WORKDIR /app

COPY --from=builder /app /app
RUN mkdir -p /app/var && chown dropship:dropship /app/var

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DROPSHIP_ENV=production \
    DROPSHIP_LOG_FORMAT=json

EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4)"]

USER dropship

CMD ["dropship", "serve", "--host", "0.0.0.0", "--port", "8000"]
