# One recipe for every platform service. Build it with the service's package name, e.g.
#   docker build -f infra/docker/service.Dockerfile --build-arg SERVICE=applications --build-arg PORT=8001 \
#       -t safe-procurement/applications .
# SERVICE: applications | origin_verification | partner_registry | loan_disbursement
# PORT:    its port from services/launcher.py SERVICES (8001 | 8002 | 8003 | 8004); only used for EXPOSE.
# docker-compose.yml builds the four images from this file; infra/k8s runs the same images.
FROM python:3.11-slim

ARG SERVICE=applications
ARG PORT=8001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SERVICE=${SERVICE} \
    SAFE_ENV=production

# Dependencies first, so the layer stays cached while only the code changes.
WORKDIR /src
# requirements.lock pins every runtime dependency with its hashes (`make lock` writes it).
COPY pyproject.toml setup.py requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# Then the project itself (a regular install: `python -m safe_procurement.services.<name>` runs from site-packages),
# with an import check so a wrong SERVICE fails the build, not the container.
COPY shared ./shared
COPY services ./services
RUN pip install --no-deps . \
    && python -c "import importlib, os; importlib.import_module('safe_procurement.services.' + os.environ['SERVICE'] + '.main')" \
    && rm -rf /src

# Non-root. `var/` is the only place a service may write (the SQLite fallback when no DATABASE_URL is set).
RUN groupadd --system --gid 10001 safe \
    && useradd --system --uid 10001 --gid safe --home-dir /app --shell /usr/sbin/nologin safe \
    && mkdir -p /app/var \
    && chown -R safe:safe /app
WORKDIR /app
USER safe

# Listen on every interface inside the container. Each service reads only its own prefix, so setting all
# four is harmless and keeps one image recipe; compose / Kubernetes may still override them.
ENV APPLICATIONS_HOST=0.0.0.0 \
    ORIGIN_VERIFICATION_HOST=0.0.0.0 \
    PARTNER_REGISTRY_HOST=0.0.0.0 \
    LOAN_DISBURSEMENT_HOST=0.0.0.0

EXPOSE ${PORT}

# slim has no curl: probe /health/ready with the standard library, on <SERVICE>_PORT when set, else the
# service's default port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=40s --retries=5 \
    CMD ["python", "-c", "import os, sys, urllib.request; from safe_procurement.services.launcher import SERVICES; s = os.environ['SERVICE']; p = os.environ.get(s.upper() + '_PORT') or SERVICES[s]; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{p}/health/ready', timeout=2).status == 200 else 1)"]

# exec: python becomes PID 1 and receives SIGTERM itself (graceful shutdown: SHUTDOWN_TIMEOUT_S).
STOPSIGNAL SIGTERM
CMD ["sh", "-c", "exec python -m safe_procurement.services.${SERVICE}"]
