import { notBuilt } from './notbuilt.js';

export default notBuilt('vacuum', 'per-partition autovacuum profiles, bloat and xmin horizon', 5);
