FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml ./
COPY tickerproject ./tickerproject
COPY markets ./markets
COPY feeds ./feeds
COPY frontend ./frontend
COPY manage.py Procfile ./
RUN pip install .
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "tickerproject.asgi:application"]
