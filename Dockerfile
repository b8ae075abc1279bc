# The receiver image: `python -m receiver serve` (default) or `python -m receiver migrate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# The locked, hashed dependencies first (a layer that changes only with the lock), then the
# package itself without resolving anything again.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY receiver ./receiver
# Not installed (pyproject ships receiver* only): the docker-compose `traffic` service runs
# `python -m demo.traffic` from /app.
COPY demo ./demo
COPY migrations ./migrations
COPY alembic.ini ./
RUN pip install --no-deps . && useradd --system --uid 10001 receiver

USER receiver
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)" || exit 1
CMD ["python", "-m", "receiver", "serve"]
