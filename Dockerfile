# The operator image: one static binary (musl) on distroless static, running as user 65532.
# The same image serves as the loader init container (`artifact-operator loader`).
#
# NOTE: the development machines and CI of this project have no container engine, so this file
# has not been built there. Build it from the repository root with `docker build .`.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
# ring compiles C and assembly for the musl target with musl-gcc.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN target="$(uname -m)-unknown-linux-musl" \
    && rustup target add "$target" \
    && echo "$target" > /rust-target
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN target="$(cat /rust-target)" \
    && cargo build --locked --release --target "$target" --bin artifact-operator \
    && cp "target/$target/release/artifact-operator" /artifact-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=builder /artifact-operator /usr/local/bin/artifact-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/artifact-operator"]
