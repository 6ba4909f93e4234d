# The ag2-otel demo image (docker-compose.yml service "demo"). Configure it with environment variables only.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ag2_otel ./ag2_otel
RUN pip install .
RUN useradd --create-home app
USER app
WORKDIR /home/app
CMD ["ag2-otel", "demo"]
