import { notBuilt } from './notbuilt.js';

export default notBuilt('status', 'queue depth per queue and status, oldest job, jobs per partition', 3);
