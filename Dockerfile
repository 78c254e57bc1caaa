# syntax=docker/dockerfile:1
# switchyard in a container: the self-contained binary (its static files embedded) on a
# small Debian runtime, run as an unprivileged user, healthy when /readyz answers.
#
#   docker build -t switchyard .
#   docker run --rm -p 3000:3000 -e SWITCHYARD_PUBLISH_KEY=... switchyard

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The dependency graph first, so a change to the sources does not fetch every crate again.
COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml bench/Cargo.toml
RUN mkdir -p src bench/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs bench/src/lib.rs \
    && cargo fetch --locked
COPY src src
COPY static static
COPY bench bench
RUN cargo build --release --locked --bin switchyard \
    && install -m 0755 target/release/switchyard /usr/local/bin/switchyard

FROM debian:bookworm-slim
# curl for the health check only. Not pinned: bookworm's security updates should apply.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/switchyard /usr/local/bin/switchyard
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin switchyard \
    && mkdir -p /var/lib/switchyard && chown switchyard /var/lib/switchyard
USER 10001
# Listen on every interface inside the container; a publish key is then required.
ENV SWITCHYARD_ADDR=0.0.0.0:3000 \
    SWITCHYARD_DATA_DIR=/var/lib/switchyard \
    RUST_LOG=info
VOLUME ["/var/lib/switchyard"]
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:3000/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchyard"]
