import { notBuilt } from './notbuilt.js';

export default notBuilt('enqueue', 'add jobs to a queue, one or many (NDJSON through COPY)', 3);
