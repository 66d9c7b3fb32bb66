# ticker's one image: web, worker, beat and release (migrate) all run from it, each with
# the Procfile's command (docker-compose.yml). docs/deployment.md.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# The project as a whole: .dockerignore leaves out only what is generated, local or
# secret, and `pip install .` finds every package (pyproject.toml), so a new package is in
# the image as soon as it is in the repository.
COPY . .
RUN pip install . \
    && useradd --system --no-create-home --home-dir /app ticker \
    && mkdir -p /app/var && chown ticker /app/var
USER ticker
# DEBUG is off and there is no SECRET_KEY: a process refuses to start until one is given
# (README, "Production settings"). TICKER_VAR_DIR holds beat's schedule file.
ENV DEBUG=0 HOST=0.0.0.0 PORT=8000 TICKER_VAR_DIR=/app/var
EXPOSE 8000
# The Procfile's `web`: the one launcher, which gives the ASGI server the frame size limit.
CMD ["python", "-m", "tickerproject.serve"]
