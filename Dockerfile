# Starling's container image: a release build in a Rust image, run from a small Debian one
# as an unprivileged user. `starling` is PID 1 and handles SIGTERM itself (graceful drain).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p starling \
 && cp target/release/starling /starling

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/starling --create-home starling
COPY --from=build /starling /usr/local/bin/starling
USER 10001
ENV STARLING_BIND=0.0.0.0:7777 \
    STARLING_DATA_DIR=/var/lib/starling
EXPOSE 7777
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/starling"]
CMD ["serve"]
