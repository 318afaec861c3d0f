# syntax=docker/dockerfile:1.7
#
# One image per Snakepay service, the images ECS runs:
#   docker build --build-arg SERVICE=external-api -t snakepay/external-api:<tag> .
# SERVICE is one of: web, external-api, internal-api, integration, admin
# (processor-sim builds too, for tests; it is never deployed).
#
# Build stage: the toolchain pinned in rust-toolchain.toml, dependencies cached between
# builds by BuildKit cache mounts, the lockfile enforced (--locked).
FROM rust:1.95.0-slim-bookworm AS build
ARG SERVICE
# The image already holds 1.95.0; naming it here stops rustup from fetching the
# components rust-toolchain.toml lists for developers (rustfmt, clippy).
ENV RUSTUP_TOOLCHAIN=1.95.0 \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    test -n "${SERVICE}" || { echo "--build-arg SERVICE=<name> is required" >&2; exit 1; } \
    && cargo build --release --locked -p "snakepay-${SERVICE}" \
    && install -D -m 0555 "target/release/snakepay-${SERVICE}" /out/snakepay

# Runtime stage: distroless (glibc, CA certificates, tzdata; no shell, no package manager),
# running as the image's unprivileged user. The root filesystem is mounted read-only by ECS.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG SERVICE
LABEL org.opencontainers.image.title="snakepay-${SERVICE}" \
      org.opencontainers.image.source="https://snakepay.invalid/snakepay" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 /out/snakepay /usr/local/bin/snakepay
USER 65532:65532
# 8080: HTTP API (/livez, /readyz); 9090: Prometheus /metrics.
EXPOSE 8080 9090
# checkov:skip=CKV_DOCKER_2: Health is checked by the orchestrator (NLB target health on /readyz, ECS ignores a Dockerfile HEALTHCHECK), and a distroless image has no shell or curl to run one.
ENTRYPOINT ["/usr/local/bin/snakepay"]
