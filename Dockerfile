# The worker image: `consumer run` by default; any other `consumer` command as the container's
# command (`migrate`, `produce`, `orgs create`, ...). Settings come from the environment
# (docs/operations.md, "Configuration reference").

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements.txt requirements-dev.txt ./
COPY consumer ./consumer
# The package's wheel, built with the locked setuptools, and wheels of the locked runtime
# dependencies, so the runtime stage installs offline.
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements-dev.txt \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && pip download --no-cache-dir --require-hashes --no-deps --dest /wheels/deps \
       -r requirements.txt

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONSUMER_WORKER_HEALTHCHECK_FILE=/tmp/consumer-health
RUN groupadd --system --gid 10001 consumer \
    && useradd --system --uid 10001 --gid consumer --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin consumer
COPY --from=build /wheels /wheels
COPY requirements.txt /wheels/requirements.txt
RUN pip install --no-index --find-links=/wheels/deps --require-hashes --no-deps \
       -r /wheels/requirements.txt \
    && pip install --no-index --no-deps /wheels/sentry_generic_consumer-*.whl && rm -rf /wheels
WORKDIR /app
USER consumer:consumer
EXPOSE 9100
# Liveness: arroyo touches the healthcheck file on every poll of an assigned consumer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
    CMD ["python", "-c", "import os, sys, time; sys.exit(time.time() - os.path.getmtime(os.environ['CONSUMER_WORKER_HEALTHCHECK_FILE']) > 60)"]
ENTRYPOINT ["consumer"]
CMD ["run"]
