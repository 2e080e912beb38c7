// Writes qmaint.schema.json, the JSON Schema editors use for qmaint.config.json,
// from the zod schema that validates config files (src/config.ts), formatted as
// the repository's Prettier settings say (npm run lint checks it).
// Run after changing a setting: npx tsx scripts/config-schema.ts
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';
import { configJsonSchema } from '../src/config.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const file = path.join(root, 'qmaint.schema.json');
const options = (await prettier.resolveConfig(file)) ?? {};
writeFileSync(file, await prettier.format(JSON.stringify(configJsonSchema()), { ...options, filepath: file }));
