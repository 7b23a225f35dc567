# Build: the official Rust image, release mode. Runtime: distroless (glibc
# and libgcc only, no shell, no package manager), as a non-root user.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# A small image: no debug info (Cargo.toml keeps some for profiling), symbols stripped.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols

# Dependencies first, against stub sources, so that this layer is reused
# until a manifest or Cargo.lock changes. The root manifest names the
# benches and the loadtest workspace member, so they must exist for it to
# parse; only the broker is built.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY loadtest/Cargo.toml ./loadtest/
RUN mkdir -p src loadtest/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs loadtest/src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && cargo build --release --locked -p pubsub \
    && rm -rf src

# The real sources. COPY keeps their modification times, which may be older
# than the stub build: touch them so that cargo rebuilds the crate.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked -p pubsub

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/pubsub /usr/local/bin/pubsub
# 65532 is the "nonroot" user of the distroless image.
USER 65532:65532
EXPOSE 8080
ENV ADDR=:8080
# Exec form: the broker is PID 1 and gets SIGTERM itself; it drains
# (SHUTDOWN_TIMEOUT_SECS, default 5 s) and exits 0.
ENTRYPOINT ["/usr/local/bin/pubsub"]
