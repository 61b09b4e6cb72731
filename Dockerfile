# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run as an unprivileged user on Debian slim.

# cargo-chef turns the manifests into a recipe, so the dependency layer is cached until
# Cargo.toml or Cargo.lock change.
FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin keel
COPY . .
RUN cargo build --release --locked --bin keel

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system keel \
    && useradd --system --gid keel --home-dir /var/lib/keel --shell /usr/sbin/nologin keel \
    && mkdir -p /var/lib/keel && chown keel:keel /var/lib/keel
COPY --from=build /src/target/release/keel /usr/local/bin/keel
USER keel:keel
WORKDIR /var/lib/keel
ENV KEEL__ENVIRONMENT=production \
    KEEL__SERVER__HOST=0.0.0.0 \
    KEEL__SERVER__PORT=8080 \
    KEEL__STORE__PATH=/var/lib/keel
VOLUME ["/var/lib/keel"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl --fail --silent --max-time 2 http://127.0.0.1:8080/health/ready > /dev/null || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/keel"]
CMD ["serve"]
