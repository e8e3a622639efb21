# syntax=docker/dockerfile:1
# Herald's container image. Build with BuildKit (the default builder since Docker 23):
#   docker build -t herald:0.1.0 .

# --- Build -----------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin herald \
    && install -D -m 0755 target/release/herald /out/herald
# An image built before the ledger's migrations exist still gets the directory.
RUN mkdir -p migrations

# --- Runtime ---------------------------------------------------------------------------
FROM debian:bookworm-slim
# Provider APIs are reached over TLS, verified against the system's CA certificates.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The UID and GID match the Helm chart's securityContext (runAsUser 10001).
RUN groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin herald
COPY --from=build /out/herald /usr/local/bin/herald
# For reference only: the same defaults are compiled into the binary.
COPY --from=build /src/config/default.toml /etc/herald/default.toml
COPY --from=build /src/migrations /usr/share/herald/migrations
USER 10001:10001
EXPOSE 9090
ENTRYPOINT ["herald"]
CMD ["run"]
