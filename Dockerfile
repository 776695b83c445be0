FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY crm ./crm
COPY events ./events
COPY producers ./producers
COPY projections ./projections
COPY read_api ./read_api
COPY schemas ./schemas
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
CMD ["crm", "--help"]
