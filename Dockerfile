# covidsite web and worker image (CPU). Build: docker build -t covidsite .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=covidsite.settings COVIDSITE_VAR_DIR=/var/lib/covidsite \
    MEDIA_ROOT=/var/lib/covidsite/media STATIC_ROOT=/app/staticfiles

RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch from the CPU wheel index: the default PyPI wheel carries gigabytes of CUDA libraries.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY covidsite covidsite
COPY patients patients
COPY analysis analysis
COPY audit audit
COPY frontend frontend
COPY manage.py ./
RUN pip install .
RUN if [ -f frontend/js/package.json ]; then cd frontend/js && npm ci && npm run build; fi \
    && python manage.py collectstatic --noinput -v 0

RUN useradd --system --home /app covidsite && mkdir -p /var/lib/covidsite/media \
    && chown -R covidsite /var/lib/covidsite
USER covidsite
EXPOSE 8000
CMD ["gunicorn", "covidsite.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "300"]
