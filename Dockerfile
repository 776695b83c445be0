FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY crm ./crm
COPY events ./events
COPY producers ./producers
COPY projections ./projections
COPY read_api ./read_api
COPY schemas ./schemas
RUN pip install --no-cache-dir . \
 && mkdir -p /var/lib/loopcrm && chown nobody /var/lib/loopcrm
# Writable by the unprivileged user: faust's data folder and the embedded mode's files.
ENV CRM_DATA_DIR=/var/lib/loopcrm
USER nobody
ENTRYPOINT []
CMD ["crm", "--help"]
