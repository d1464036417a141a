# Builds the Strata binaries (strata-node, strata, strata-bench) into one small image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/strata-node /src/target/release/strata /src/target/release/strata-bench /usr/local/bin/
EXPOSE 8080
ENTRYPOINT ["strata-node"]
CMD ["--config", "/etc/strata/node.toml"]
