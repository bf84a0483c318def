# hyperprior API image. Build: docker build -t hyperprior .
# Run alone (SQLite in the data volume): docker run -p 8000:8000 -v hyperprior:/data hyperprior
#
# The packages below are exactly the project's (pyproject's [tool.setuptools]); they are
# installed as a wheel, so nothing runs from the source tree. tests/test_image.py
# builds a wheel from these COPY lines and runs every CLI command from it.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# libgomp1: LightGBM's OpenMP runtime. gcc and libc6-dev: the C compiler (and the C
# headers) that compiles the surrogates' trees (HYPERPRIOR_COMPILED_TREES=auto, in the
# background at load, cached under ~/.cache/hyperprior/compiled); without them the
# server predicts with LightGBM.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The server's dependencies at the exact versions (and hashes) of requirements.lock (the
# SDK's base dependencies and the server extra's), in a layer of their own so that a change
# to the code does not reinstall them; then the project itself with --no-deps. The build
# fails if the lock misses one: an offline install of the server extra finds every
# requirement already there (pip check looks at base dependencies only), then pip check.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY db ./db
COPY training ./training
COPY service ./service
COPY client ./client
COPY hyperprior ./hyperprior
RUN pip install --no-deps . && pip install --quiet --no-index 'hyperprior[server]' \
    && pip check && cd / && rm -rf /src \
    && useradd --create-home --uid 10001 hyperprior \
    && mkdir -p /data/uploads && chown -R hyperprior:hyperprior /data
# Everything the service writes goes under /data: refinement uploads
# (HYPERPRIOR_DATA_DIR) and, without HYPERPRIOR_DATABASE_URL, the SQLite database
# (./hyperprior.db, relative to this working directory). A new named volume takes the
# owner of /data from the image; a bind mount must be writable by uid 10001.
ENV HYPERPRIOR_DATA_DIR=/data
WORKDIR /data
VOLUME ["/data"]
USER hyperprior
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz').status == 200 else 1)"
CMD ["hyperprior", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
