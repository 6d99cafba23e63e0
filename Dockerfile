# syntax=docker/dockerfile:1
# sandbox-admission container image.
#
#   docker build -t sandbox-admission:0.1.0 .
#
# The build stage uses the same toolchain and the same locked release build as CI (`cargo build
# --release --locked`, profile.release in Cargo.toml). The final image is distroless: glibc,
# CA certificates and a non-root user (65532), no shell, no package manager.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The registry cache only speeds up rebuilds; the binary is copied out of target/ in this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin sandbox-admission \
    && install -D -m 0755 target/release/sandbox-admission /out/sandbox-admission

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sandbox-admission /usr/local/bin/sandbox-admission
# The default policies and configuration are compiled into the binary; these copies document what
# the image serves and are a starting point for a policies ConfigMap.
COPY policies/ /usr/share/sandbox-admission/policies/
COPY config/default.yaml /usr/share/sandbox-admission/config.yaml
USER 65532:65532
# 8443: HTTPS admission (/mutate, /validate); 9090: HTTP health and metrics.
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/sandbox-admission"]
CMD ["serve"]
