/**
 * Units for people, the same in every command's human output (--json keeps
 * raw numbers): sizes in powers of 1024 with one decimal below 10 (`512 B`,
 * `3.4 MB`, `120 MB`); durations and ages as `850ms`, `1.2s`, `45s`, `12min`,
 * `3.5h`, `4d`, spelled as the duration flags read them.
 */

export function bytes(n: number | null): string {
  if (n === null) return '';
  if (n < 1024) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v >= 10 ? 0 : 1)} ${units[i]}`;
}

export function duration(seconds: number | null): string {
  if (seconds === null) return '';
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  if (seconds < 10) return `${Number(seconds.toFixed(1))}s`;
  if (seconds < 120) return `${Math.round(seconds)}s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)}min`;
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)}h`;
  return `${Math.round(seconds / 86_400)}d`;
}

/** A timestamp for a table (the header says UTC): `2026-01-31 12:00:00`; '' for none. */
export function timestamp(iso: string | null | undefined): string {
  if (!iso) return '';
  return iso.replace('T', ' ').replace(/(\.\d+)?(Z|\+00(:?00)?)$/, '');
}

/** A duration given in milliseconds (how long a step or run took), as duration() writes it. */
export function elapsed(ms: number | null): string {
  return ms === null ? '' : duration(ms / 1000);
}
