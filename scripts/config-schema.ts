// Writes qmaint.schema.json, the JSON Schema editors use for qmaint.config.json,
// from the zod schema that validates config files (src/config.ts).
// Run after changing a setting: npx tsx scripts/config-schema.ts
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { configJsonSchema } from '../src/config.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
writeFileSync(path.join(root, 'qmaint.schema.json'), JSON.stringify(configJsonSchema(), null, 2) + '\n');
