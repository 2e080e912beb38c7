#!/usr/bin/env node
import { runCommand } from '../dist/cli.js';

// `qmaint status | head` closes our stdout early: that is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

runCommand(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin }).then((result) => {
  process.exitCode = result.exitCode;
});
