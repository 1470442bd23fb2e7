"""Writes bench/parse_300.Dockerfile: a 300-line Dockerfile mixing every instruction form.

Usage: python3 bench/gen_parse_300.py [OUTPUT]. Deterministic (no randomness).
"""

from __future__ import annotations

import sys
from pathlib import Path

BLOCK = [
    "# stage {i}: build tools",
    "FROM --platform=$BUILDPLATFORM debian:12-slim AS build{i}",
    "ARG VERSION=1.{i}.0 TARGETARCH",
    'ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_{i}="value {i}"',
    'LABEL org.opencontainers.image.title="app{i}" maintainer="dev{i}@example.com"',
    "WORKDIR /src/{i}",
    "RUN --mount=type=cache,target=/var/cache/apt apt-get update \\",
    "    && apt-get install -y --no-install-recommends ca-certificates curl git \\",
    "    && rm -rf /var/lib/apt/lists/*",
    'RUN ["/bin/sh", "-c", "echo build {i} > /out.txt"]',
    "COPY --chown=1000:1000 --chmod=0644 --link src/{i}/ /src/{i}/",
    "COPY --from=build{i} /out.txt /artifacts/{i}.txt",
    "ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f{i}.tgz /tmp/",
    "RUN <<EOF",
    "set -e",
    "echo heredoc {i}",
    "EOF",
    "EXPOSE 80{i:02d}/tcp 90{i:02d}/udp",
    "VOLUME [\"/data/{i}\"]",
    "USER 1000:1000",
    'HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1',
    'ENTRYPOINT ["/usr/local/bin/app{i}"]',
    'CMD ["--serve", "--port=80{i:02d}"]',
    "ONBUILD COPY . /app/src",
    "STOPSIGNAL SIGTERM",
    "",
]


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("parse_300.Dockerfile")
    lines: list[str] = ["# syntax=docker/dockerfile:1", "ARG BASE=debian:12-slim", ""]
    i = 0
    while len(lines) < 300:
        lines.extend(line.format(i=i) for line in BLOCK)
        i += 1
    out.write_text("\n".join(lines[:300]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
