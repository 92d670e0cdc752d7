# One image for every Vigil service (edge, worker, notifier, projector, api, init);
# docker-compose.yml picks the `vigil` subcommand per service.
# trixie: Debian 13 ships postgresql-client-17 (17.6-0+deb13u1, packages.debian.org), the
# major version of the compose PostgreSQL, for `vigil backup` (pg_dump) and `vigil restore`
FROM python:3.11-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIGIL_STATE_DIR=/var/lib/vigil

RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-17 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Only what the package needs: see .dockerignore for what stays out of the context. The
# tooling (tools/: benchmarks, fault suite, dev stack, demo) is not product and stays out.
COPY pyproject.toml README.md ./
COPY vigil ./vigil
COPY vigil_cli ./vigil_cli
COPY schemas ./schemas
COPY edge_producer ./edge_producer
COPY agents ./agents
COPY projections ./projections
COPY api ./api
RUN pip install . \
    && useradd --create-home --uid 10001 --user-group vigil \
    && mkdir -p /var/lib/vigil /backups \
    && chown vigil:vigil /var/lib/vigil /backups

USER vigil
VOLUME ["/var/lib/vigil"]

CMD ["vigil", "--help"]
