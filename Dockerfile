# The probity image: a release build on Debian, run as non-root on distroless.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin probity

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/probity /usr/local/bin/probity
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/probity"]
CMD ["serve"]
