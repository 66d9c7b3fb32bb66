FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml ./
COPY tickerproject ./tickerproject
COPY accounts ./accounts
COPY markets ./markets
COPY streaming ./streaming
COPY feeds ./feeds
COPY frontend ./frontend
COPY loadtest ./loadtest
COPY manage.py Procfile ./
RUN pip install .
EXPOSE 8000
# DEBUG is off and SECRET_KEY must be given (README, "Production settings").
ENV HOST=0.0.0.0 PORT=8000
# The one launcher: it gives the ASGI server the frame size limit (README, "Frame size").
CMD ["python", "-m", "tickerproject.serve"]
