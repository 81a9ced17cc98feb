# syntax=docker/dockerfile:1
# Node 24 LTS. The source also runs on Node 20.19+, which .ci/run tests beside Node 24.
ARG NODE_IMAGE=node:24-bookworm-slim

# Runtime dependencies only, with better-sqlite3 compiled here from source.
# better-sqlite3 12 (kept while Node 20 is supported; 13 needs Node 22) derives its classes from
# node::ObjectWrap, whose inline code in the headers of Node 24.19 and later removes an environment cleanup
# hook on destruction: a statement garbage-collected outside a JavaScript context then aborts the process
# ("RemoveEnvironmentCleanupHook: Assertion failed: (env) != nullptr"). Compiled against Node 24.18's headers,
# from the npm registry (the same ABI, NODE_MODULE_VERSION 137), it runs on every Node 24 without that call.
# Remove this, and the same step in .ci/run, when Node 20 goes and better-sqlite3 13 (Node-API) comes.
FROM ${NODE_IMAGE} AS deps
ARG NODE24_HEADERS=24.18.0
WORKDIR /app
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ binutils \
  && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /opt/node-headers && cd /opt/node-headers \
  && npm pack --silent "node-linux-$(node -p process.arch)@${NODE24_HEADERS}" \
  && tar xzf node-linux-*.tgz --strip-components=1 package/include \
  && rm node-linux-*.tgz
ENV npm_config_build_from_source=true \
    npm_config_nodedir=/opt/node-headers
COPY package.json package-lock.json ./
# firmware-sim (the device simulator, an npm workspace) is a test and demo tool, not part of the server:
# without the workspace, neither it nor its MQTT client is installed. Dev dependencies are omitted too, and
# so are the optional ones, which are only the npm builds of ffmpeg/ffprobe: the image uses Debian's (below).
# The last step fails the build if better-sqlite3 was compiled with the ObjectWrap code that aborts anyway.
RUN npm pkg delete workspaces \
  && npm ci --omit=dev --omit=optional \
  && npm cache clean --force \
  && ! nm -D --undefined-only node_modules/better-sqlite3/build/Release/better_sqlite3.node \
    | grep RemoveEnvironmentCleanupHook

# Compiles TypeScript; needs the dev dependencies, not the native build.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm pkg delete workspaces && npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src src
RUN npm run build

# Runtime: no compiler, no dev dependencies, not root. Audio tools from Debian, kept up to date with its
# security fixes: ffmpeg/ffprobe for uploads and bulletins, eSpeak NG for Vietnamese text-to-speech (found at
# /usr/bin/espeak-ng; the WebAssembly build in node_modules is the fallback when it is absent).
FROM ${NODE_IMAGE}
RUN apt-get update \
  && apt-get install -y --no-install-recommends ffmpeg espeak-ng \
  && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    DATA_DIR=/app/data \
    PORT=3000 \
    MQTT_PORT=1883 \
    FFMPEG_PATH=/usr/bin/ffmpeg \
    FFPROBE_PATH=/usr/bin/ffprobe
WORKDIR /app
COPY --from=deps /app/package.json ./
COPY --from=deps /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY drizzle drizzle
# The image's `node` user is uid 1000: a bind-mounted data directory must be writable by it (README, Docker).
RUN mkdir -p /app/data && chown node:node /app/data
USER node
VOLUME ["/app/data"]
# 8883: MQTT over TLS, open when TLS_CERT_FILE/TLS_KEY_FILE are set (then MQTT_PORT=off closes 1883).
EXPOSE 3000 1883 8883
# Asks /readyz (database writable, broker listening) at the address HOST names: a wildcard through
# loopback, one interface through itself; over HTTPS when TLS_CERT_FILE is set. The start period covers migrations and their backup.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "dist/src/cli/healthcheck.js"]
# Exec form, node itself as PID 1 (not npm, not a shell): `docker stop`'s SIGTERM reaches the server, which
# closes the broker, flushes and closes the database within SHUTDOWN_TIMEOUT_S (8 s), inside Docker's 10 s.
CMD ["node", "dist/src/server.js"]
