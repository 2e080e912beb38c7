import { notBuilt } from './notbuilt.js';

export default notBuilt('schedule', 'maintenance on a schedule with pg_cron or a node-cron daemon', 7);
