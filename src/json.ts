/**
 * JSON kept as text. A payload given as JSON text is validated here and then
 * sent to PostgreSQL as that text (jsonb keeps numeric precision when it
 * parses the text itself), and a payload read back is spliced into --json
 * output as the text PostgreSQL returned: no JSON.parse/JSON.stringify round
 * trip rounds a number, turns 1e400 into null, or recurses through a deeply
 * nested value.
 */
import { randomBytes } from 'node:crypto';
import { badInput } from './errors.js';

/** JSON text that travels as given (to PostgreSQL, and into JSON output). */
export class JsonText {
  private constructor(readonly text: string) {}

  /**
   * Validate text (as the input named by `where`, e.g. "--payload" or "jobs.ndjson
   * line 3") and wrap it. Throws bad_input when it is not JSON or holds what
   * PostgreSQL's jsonb cannot store.
   */
  static parse(text: string, where: string): JsonText {
    try {
      JSON.parse(text);
    } catch (err) {
      throw badInput(`${where} is not valid JSON (${(err as Error).message}); fix it, nothing was enqueued`);
    }
    const problem = unstorable(text);
    if (problem) throw badInput(`${where} ${problem}; nothing was enqueued`);
    return new JsonText(text);
  }

  /** Text that is known to be valid JSON already (read back from PostgreSQL). */
  static trusted(text: string): JsonText {
    return new JsonText(text);
  }
}

/**
 * The members of a JSON object's text, each value as its own text (exactly as
 * written, whitespace around it trimmed). Call it on text already validated as
 * a JSON object. Iterative: a deeply nested member costs no stack.
 */
export function objectMembers(text: string): Map<string, string> {
  const members = new Map<string, string>();
  let i = text.indexOf('{') + 1;
  const skipSpace = () => {
    while (i < text.length && /\s/.test(text[i]!)) i++;
  };
  const stringEnd = (from: number): number => {
    let j = from + 1;
    while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
    return j + 1;
  };
  for (;;) {
    skipSpace();
    if (text[i] === '}') return members;
    const keyEnd = stringEnd(i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = keyEnd;
    skipSpace();
    i++; // ':'
    skipSpace();
    const start = i;
    let depth = 0;
    while (i < text.length) {
      const c = text[i]!;
      if (c === '"') {
        i = stringEnd(i);
        continue;
      }
      if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') {
        if (depth === 0) break;
        depth--;
      } else if (c === ',' && depth === 0) break;
      i++;
    }
    members.set(key, text.slice(start, i).trim());
    if (text[i] === ',') i++;
  }
}

const LONE_SURROGATE = /\p{Cs}/u;

// In a JSON string: a surrogate pair written as two escapes, any other \u escape, or another escape.
const ESCAPE = /\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})|\\[^u]/g;

// A JSON string (skipped) or a number: integer digits, fraction digits, exponent.
const STRING_OR_NUMBER = /"(?:[^"\\]|\\.)*"|-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?/g;
// PostgreSQL's numeric: at most 131072 digits before the decimal point and 16383 after.
const NUMERIC_INTEGER_DIGITS = 131_072;
const NUMERIC_SCALE = 16_383;
// ... and an exponent below INT_MAX / 2 in magnitude, even for zero.
const NUMERIC_EXPONENT = 1_073_741_823;

/**
 * Deepest nesting qmaint stores. PostgreSQL parses jsonb recursively and gives
 * up at a depth that depends on max_stack_depth (about 16,000 with the default
 * 2MB on PostgreSQL 18); a fixed limit below it means an accepted payload never
 * depends on server settings.
 */
export const MAX_JSON_DEPTH = 5000;
// A JSON string (skipped) or a bracket.
const STRING_OR_BRACKET = /"(?:[^"\\]|\\.)*"|[[\]{}]/g;

function depthOf(text: string): number {
  let depth = 0;
  let max = 0;
  for (const [token] of text.matchAll(STRING_OR_BRACKET)) {
    if (token === '[' || token === '{') max = Math.max(max, ++depth);
    else if (token === ']' || token === '}') depth--;
  }
  return max;
}

/**
 * What in valid JSON text PostgreSQL's jsonb refuses (null when nothing):
 * the \u0000 escape, half of a surrogate pair (escaped or not), a number
 * beyond the range of numeric, and nesting deeper than MAX_JSON_DEPTH.
 */
export function unstorable(text: string): string | null {
  if (LONE_SURROGATE.test(text)) return 'holds a lone surrogate (half of a UTF-16 pair), which PostgreSQL cannot store; remove it or complete the pair';
  if (text.includes('\\u')) {
    for (const m of text.matchAll(ESCAPE)) {
      const single = m[3];
      if (single === undefined) continue;
      const code = parseInt(single, 16);
      if (code === 0) return 'holds the escape \\u0000, which PostgreSQL cannot store in jsonb; remove it';
      if (code >= 0xd800 && code <= 0xdfff)
        return `holds the escape \\u${single}, half of a surrogate pair, which PostgreSQL cannot store; remove it or complete the pair`;
    }
  }
  // Only an exponent or a very long number can leave numeric's range.
  if (text.length > NUMERIC_SCALE || /[eE][+-]?\d/.test(text)) {
    for (const m of text.matchAll(STRING_OR_NUMBER)) {
      if (m[1] === undefined) continue;
      const int = m[1];
      const frac = m[2] ?? '';
      const exp = Number(m[3] ?? 0);
      const digits = int + frac;
      const leadingZeros = digits.length - digits.replace(/^0+/, '').length;
      const integerDigits = digits.length === leadingZeros ? 0 : int.length + exp - leadingZeros;
      const scale = frac.length - exp;
      if (integerDigits > NUMERIC_INTEGER_DIGITS || scale > NUMERIC_SCALE || Math.abs(exp) >= NUMERIC_EXPONENT) {
        const shown = m[0].length > 40 ? `${m[0].slice(0, 20)}…${m[0].slice(-10)}` : m[0];
        return `holds the number ${shown}, beyond PostgreSQL's numeric (at most ${NUMERIC_INTEGER_DIGITS} digits before the decimal point and ${NUMERIC_SCALE} after); store it as a string`;
      }
    }
  }
  // Nesting deeper than the limit takes at least twice as many characters.
  if (text.length > 2 * MAX_JSON_DEPTH && depthOf(text) > MAX_JSON_DEPTH) {
    return `nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep, more than qmaint stores; flatten it`;
  }
  return null;
}

/** JSON.stringify that writes JsonText values as their text and bigints as strings. */
export function stringifyJson(doc: unknown, indent?: number): string {
  const raw: string[] = [];
  const tag = `\u0000${randomBytes(6).toString('hex')}:`;
  const text = JSON.stringify(
    doc,
    (_key, value: unknown) => {
      if (typeof value === 'bigint') return value.toString();
      if (value instanceof JsonText) {
        raw.push(value.text);
        return tag + (raw.length - 1);
      }
      return value;
    },
    indent,
  );
  if (raw.length === 0) return text;
  const placeholder = new RegExp(`"${JSON.stringify(tag).slice(1, -1).replace(/\\/g, '\\\\')}(\\d+)"`, 'g');
  return text.replace(placeholder, (_m, i: string) => raw[Number(i)]!);
}
