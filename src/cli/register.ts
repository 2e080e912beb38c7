import type { Argv } from 'yargs';

/** Registers one command group on the parser. */
// yargs' builder types grow with every option; a group only adds its own.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Register = (y: Argv<any>) => void;
