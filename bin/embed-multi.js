#!/usr/bin/env node
// The installed command. The TypeScript is compiled to dist/ by `npm run build`
// (scripts/setup.sh does it).
import "../dist/src/cli.js";
