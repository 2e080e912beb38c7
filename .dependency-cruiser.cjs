// `npm run check:cycles`: no import cycle anywhere in the built library and CLI.
// It reads dist/ (the JavaScript tsc emits), so type-only imports, which
// vanish at build time, do not count; runtime imports do.
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'A module must not import itself through others; move the shared part to a module both can import.',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: 'node_modules' },
  },
};
