#!/usr/bin/env node
// The installed command. The TypeScript is compiled to dist/ by `npm run build`
// (scripts/setup.sh does it).
// Node's deprecation notices (e.g. grpc-js naming an IP address as the TLS
// server name) would break the one-line errors users get; they are for us.
process.noDeprecation = true;
await import("../dist/src/cli.js");
