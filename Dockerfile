# The one image of compose.yaml: web, migrations and both workers run from it.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir orchestration web && touch orchestration/__init__.py web/__init__.py \
    && pip install -e . \
    && rm -r orchestration web
COPY piccolo_conf.py ./
COPY orchestration ./orchestration
COPY web ./web
COPY piccolo_migrations ./piccolo_migrations
COPY templates ./templates
COPY static ./static
COPY scripts ./scripts

RUN useradd --system --no-create-home app
USER app
EXPOSE 8000 9100
CMD ["uvicorn", "web.app:app", "--host", "0.0.0.0", "--port", "8000"]
