import { envName, redactUrl, resolveConnection, settingSpecs, type SettingKey } from '../../config.js';
import { handler } from '../context.js';
import type { Register } from '../register.js';

const flagName = (key: string) => key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());

const register: Register = (y) => {
  y.command(
    'config',
    'every setting: its effective value and where it came from (flag, env, file, default); the connection, password masked',
    (b) => {
      for (const [key, spec] of Object.entries(settingSpecs))
        b.option(flagName(key), { type: 'string', description: `show it as this flag would set it: ${spec.description}` });
      return b;
    },
    handler<Record<string, unknown>>((ctx, argv) => {
      const flags = Object.fromEntries(Object.keys(settingSpecs).map((key) => [key, argv[key]])) as Partial<Record<SettingKey, unknown>>;
      const loaded = ctx.settings(flags);
      const connection = resolveConnection(ctx.args.databaseUrl);
      const settings = (Object.keys(settingSpecs) as SettingKey[]).map((key) => ({
        key,
        value: loaded.values[key],
        origin: loaded.origin[key],
        env: envName(key),
        default: settingSpecs[key].default,
      }));
      const doc = {
        ok: true,
        configFile: loaded.configFile ?? null,
        connection: { source: connection.source, url: connection.url === undefined ? null : redactUrl(connection.url) },
        settings,
      };
      const out = ctx.out;
      out.emit(doc, () => {
        out.wrapped(`connection: ${connection.url === undefined ? connection.source : `${redactUrl(connection.url)} (from ${connection.source})`}`);
        out.wrapped(`config file: ${loaded.configFile ?? 'none (qmaint.config.json in this directory, or QMAINT_CONFIG)'}`);
        out.table(
          [
            { key: 'key', header: 'setting' },
            { key: 'value', header: 'value', wrap: true },
            { key: 'origin', header: 'from' },
            { key: 'env', header: 'environment variable', priority: 1 },
          ],
          settings.map((s) => ({ ...s, value: String(s.value) })),
        );
      });
    }),
  );
};

export default register;
