# The service's image: the API (gunicorn, the default command), `incident-management worker` and
# `incident-management migrate`, all from the same lock CI installs (requirements.txt).
# Python 3.11, as CI runs it. compose.yaml runs PostgreSQL, the migrations, one API and one worker.

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# requirements.txt ends with `-e .`: the package is installed in editable mode from /app, exactly
# as `make install` and CI install it. So the source goes in first, at the path it keeps in the
# final image (the editable install points there), and app/core/migrations.py finds alembic.ini and
# alembic/ beside app/, as it does in a checkout. Every dependency comes as a wheel: no compiler.
COPY pyproject.toml README.md requirements.txt alembic.ini ./
COPY alembic ./alembic
COPY app ./app
RUN pip install -r requirements.txt \
    && python -m compileall -q /app/app /app/alembic

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 ims \
    && useradd --system --uid 10001 --gid ims --no-create-home --home-dir /app ims \
    && mkdir -p /app/data \
    && chown ims:ims /app/data
WORKDIR /app
# The virtual environment and the source at the same paths as in the builder; nothing else from it
# (pip's caches, the build front-end's downloads). Root owns the code; the service cannot change it.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
USER 10001:10001
EXPOSE 8000
# Ready: the database answers and the schema is this code's (see /health/ready). python's urllib,
# not curl (the slim image has none); it sends a Host that TRUSTED_HOSTS accepts.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "app.healthcheck"]
# The API; app/gunicorn_conf.py binds GUNICORN_BIND (default 0.0.0.0:8000) with WEB_CONCURRENCY
# workers. The other commands run this image with `incident-management migrate` or `... worker`.
CMD ["gunicorn", "-c", "python:app.gunicorn_conf", "app.main:app"]
