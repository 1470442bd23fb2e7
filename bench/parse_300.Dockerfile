# syntax=docker/dockerfile:1
ARG BASE=debian:12-slim

# stage 0: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build0
ARG VERSION=1.0.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_0="value 0"
LABEL org.opencontainers.image.title="app0" maintainer="dev0@example.com"
WORKDIR /src/0
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 0 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/0/ /src/0/
COPY --from=build0 /out.txt /artifacts/0.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f0.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 0
EOF
EXPOSE 8000/tcp 9000/udp
VOLUME ["/data/0"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app0"]
CMD ["--serve", "--port=8000"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 1: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build1
ARG VERSION=1.1.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_1="value 1"
LABEL org.opencontainers.image.title="app1" maintainer="dev1@example.com"
WORKDIR /src/1
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 1 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/1/ /src/1/
COPY --from=build1 /out.txt /artifacts/1.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f1.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 1
EOF
EXPOSE 8001/tcp 9001/udp
VOLUME ["/data/1"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app1"]
CMD ["--serve", "--port=8001"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 2: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build2
ARG VERSION=1.2.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_2="value 2"
LABEL org.opencontainers.image.title="app2" maintainer="dev2@example.com"
WORKDIR /src/2
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 2 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/2/ /src/2/
COPY --from=build2 /out.txt /artifacts/2.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f2.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 2
EOF
EXPOSE 8002/tcp 9002/udp
VOLUME ["/data/2"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app2"]
CMD ["--serve", "--port=8002"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 3: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build3
ARG VERSION=1.3.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_3="value 3"
LABEL org.opencontainers.image.title="app3" maintainer="dev3@example.com"
WORKDIR /src/3
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 3 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/3/ /src/3/
COPY --from=build3 /out.txt /artifacts/3.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f3.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 3
EOF
EXPOSE 8003/tcp 9003/udp
VOLUME ["/data/3"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app3"]
CMD ["--serve", "--port=8003"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 4: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build4
ARG VERSION=1.4.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_4="value 4"
LABEL org.opencontainers.image.title="app4" maintainer="dev4@example.com"
WORKDIR /src/4
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 4 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/4/ /src/4/
COPY --from=build4 /out.txt /artifacts/4.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f4.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 4
EOF
EXPOSE 8004/tcp 9004/udp
VOLUME ["/data/4"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app4"]
CMD ["--serve", "--port=8004"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 5: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build5
ARG VERSION=1.5.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_5="value 5"
LABEL org.opencontainers.image.title="app5" maintainer="dev5@example.com"
WORKDIR /src/5
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 5 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/5/ /src/5/
COPY --from=build5 /out.txt /artifacts/5.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f5.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 5
EOF
EXPOSE 8005/tcp 9005/udp
VOLUME ["/data/5"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app5"]
CMD ["--serve", "--port=8005"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 6: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build6
ARG VERSION=1.6.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_6="value 6"
LABEL org.opencontainers.image.title="app6" maintainer="dev6@example.com"
WORKDIR /src/6
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 6 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/6/ /src/6/
COPY --from=build6 /out.txt /artifacts/6.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f6.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 6
EOF
EXPOSE 8006/tcp 9006/udp
VOLUME ["/data/6"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app6"]
CMD ["--serve", "--port=8006"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 7: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build7
ARG VERSION=1.7.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_7="value 7"
LABEL org.opencontainers.image.title="app7" maintainer="dev7@example.com"
WORKDIR /src/7
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 7 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/7/ /src/7/
COPY --from=build7 /out.txt /artifacts/7.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f7.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 7
EOF
EXPOSE 8007/tcp 9007/udp
VOLUME ["/data/7"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app7"]
CMD ["--serve", "--port=8007"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 8: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build8
ARG VERSION=1.8.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_8="value 8"
LABEL org.opencontainers.image.title="app8" maintainer="dev8@example.com"
WORKDIR /src/8
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 8 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/8/ /src/8/
COPY --from=build8 /out.txt /artifacts/8.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f8.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 8
EOF
EXPOSE 8008/tcp 9008/udp
VOLUME ["/data/8"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app8"]
CMD ["--serve", "--port=8008"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 9: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build9
ARG VERSION=1.9.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_9="value 9"
LABEL org.opencontainers.image.title="app9" maintainer="dev9@example.com"
WORKDIR /src/9
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 9 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/9/ /src/9/
COPY --from=build9 /out.txt /artifacts/9.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f9.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 9
EOF
EXPOSE 8009/tcp 9009/udp
VOLUME ["/data/9"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app9"]
CMD ["--serve", "--port=8009"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 10: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build10
ARG VERSION=1.10.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_10="value 10"
LABEL org.opencontainers.image.title="app10" maintainer="dev10@example.com"
WORKDIR /src/10
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 10 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/10/ /src/10/
COPY --from=build10 /out.txt /artifacts/10.txt
ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.com/f10.tgz /tmp/
RUN <<EOF
set -e
echo heredoc 10
EOF
EXPOSE 8010/tcp 9010/udp
VOLUME ["/data/10"]
USER 1000:1000
HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/ || exit 1
ENTRYPOINT ["/usr/local/bin/app10"]
CMD ["--serve", "--port=8010"]
ONBUILD COPY . /app/src
STOPSIGNAL SIGTERM

# stage 11: build tools
FROM --platform=$BUILDPLATFORM debian:12-slim AS build11
ARG VERSION=1.11.0 TARGETARCH
ENV PATH="/opt/tools/bin:$PATH" LANG=C.UTF-8 APP_11="value 11"
LABEL org.opencontainers.image.title="app11" maintainer="dev11@example.com"
WORKDIR /src/11
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl git \
    && rm -rf /var/lib/apt/lists/*
RUN ["/bin/sh", "-c", "echo build 11 > /out.txt"]
COPY --chown=1000:1000 --chmod=0644 --link src/11/ /src/11/
