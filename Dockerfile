# Oneiric runtime image: `oneiric run` with the HTTP surface, verifying a signed manifest.
#
#   docker build -t oneiric .
#   docker run -p 9464:9464 -v ./config:/srv/oneiric/config:ro oneiric --target prod
#
# config/ holds manifest.json (or point --manifest at an https:// URL), trust.json and
# secrets/ (secret("a/b") reads config/secrets/a/b); state/ and var/ are writable.
# The application whose components the plans name is installed beside the runtime:
# APP is its source directory in the build context (the demo shop by default).
# tests/test_deploy.py builds the same wheels into a fresh virtualenv and runs the
# ENTRYPOINT + CMD and HEALTHCHECK command lines below exactly as written.

# -- stage 1: wheels (the runtime with its http extra, the application, every dependency)
FROM python:3.11-slim AS wheels
ARG APP=demo
WORKDIR /src
COPY runtime/ runtime/
COPY ${APP}/ app/
RUN pip wheel --no-cache-dir --wheel-dir /wheels "./runtime[http]" ./app

# -- stage 2: slim, non-root runtime image; no compiler, no build tools
FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /srv/oneiric oneiric \
 && mkdir -p /srv/oneiric/state /srv/oneiric/var /srv/oneiric/config \
 && chown -R oneiric:oneiric /srv/oneiric/state /srv/oneiric/var
COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels
USER oneiric
WORKDIR /srv/oneiric
ENV ONEIRIC_STATE=state PYTHONUNBUFFERED=1 LOG_LEVEL=info
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2)"]
ENTRYPOINT ["oneiric", "run", "--http", "0.0.0.0:9464", "--manifest", "config/manifest.json", "--trust", "config/trust.json"]
CMD ["--target", "prod"]
