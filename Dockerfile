# nlpd container image (README.md "Deployment"): a build stage compiles nlpd and
# nlpd-train; the runtime stage holds the two binaries, the shared libraries they
# link and nothing else, and runs as an unprivileged user.
#
#   docker build -t nlpd .                    # CPU image on Debian 12 (bookworm-slim)
#   docker build --build-arg CUDA=1 -t nlpd:cuda .   # GPU image: CUDA runtime base, cuBLAS
#
# Volumes (all under /var/lib/nlpd, the working directory, so the relative model
# paths of config/nlpd.json resolve there):
#   /var/lib/nlpd/models      Hugging Face model folders (read-only is fine)
#   /var/lib/nlpd/repository  versioned model repositories (written by nlpd-train)
#   /var/lib/nlpd/feedback    feedback logs (POST /v1/feedback)
# The configuration is /etc/nlpd/nlpd.json (config/nlpd.json; mount your own).
# tini is PID 1: it forwards SIGTERM to nlpd, which drains in-flight requests
# (drain_timeout_ms) and exits 0; give `docker stop -t` / stop_grace_period /
# terminationGracePeriodSeconds more than that. The same image runs the trainer
# sidecar: `docker run ... nlpd nlpd-train watch ...`.

ARG CUDA=0
# CUDA images (used when CUDA=1). Same Ubuntu release for build and runtime so the
# shared library names match; nvidia/cuda ships no Debian flavour.
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.4.1-devel-ubuntu22.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:12.4.1-runtime-ubuntu22.04
ARG DEBIAN_IMAGE=debian:12
ARG DEBIAN_SLIM_IMAGE=debian:12-slim

# ---------------------------------------------------------------- build stage
FROM ${DEBIAN_IMAGE} AS build-0
FROM ${CUDA_DEVEL_IMAGE} AS build-1
# hadolint ignore=DL3006
FROM build-${CUDA} AS build
ARG CUDA
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Versions are the base release's (Debian 12 / Ubuntu 22.04 plus security
# updates): pinning exact package versions breaks at the next point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config libcjson-dev libutf8proc-dev libopenblas-dev \
      libsentencepiece-dev libssl-dev libmicrohttpd-dev libuv1-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore lets in only the sources: Makefile, engine/, server/, trainer/,
# cuda/ (when present), config/nlpd.json and deploy/docker/.
COPY . .
# Portable binaries (x86-64-v2 baseline; faster kernels picked at run time).
RUN make -j"$(nproc)" CUDA="${CUDA}" build/nlpd build/nlpd-train \
 && strip --strip-unneeded build/nlpd build/nlpd-train

# -------------------------------------------------------------- runtime stage
FROM ${DEBIAN_SLIM_IMAGE} AS runtime-0
FROM ${CUDA_RUNTIME_IMAGE} AS runtime-1
# hadolint ignore=DL3006
FROM runtime-${CUDA} AS runtime
# Only the shared libraries the binaries link (ldd build/nlpd), tini as PID 1.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libcjson1 libutf8proc2 libopenblas0-pthread libsentencepiece0 libssl3 \
      libmicrohttpd12 libuv1 tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 nlpd \
 && useradd --system --uid 10001 --gid nlpd --home-dir /var/lib/nlpd --no-create-home \
      --shell /usr/sbin/nologin nlpd \
 && mkdir -p /var/lib/nlpd/models /var/lib/nlpd/repository /var/lib/nlpd/feedback /etc/nlpd \
 && chown -R nlpd:nlpd /var/lib/nlpd
COPY --from=build /src/build/nlpd /src/build/nlpd-train /usr/local/bin/
COPY --from=build /src/config/nlpd.json /etc/nlpd/nlpd.json
COPY --from=build /src/deploy/docker/healthcheck.sh /usr/local/bin/nlpd-healthcheck
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/nlpd
VOLUME ["/var/lib/nlpd/models", "/var/lib/nlpd/repository", "/var/lib/nlpd/feedback"]
# NLPD_PORT: the port the health check probes (keep it equal to --listen's).
ENV NLPD_PORT=8080
EXPOSE 8080
STOPSIGNAL SIGTERM
# Liveness only (/healthz); /readyz is 503 while models load and while draining.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD ["/usr/local/bin/nlpd-healthcheck", "/healthz"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["nlpd", "--config", "/etc/nlpd/nlpd.json", "--listen", "0.0.0.0:8080"]
