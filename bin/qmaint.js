#!/usr/bin/env node
import { runMain } from '../dist/cli.js';

// `qmaint status | head` closes our stdout early: that is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

runMain(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
