import { notBuilt } from './notbuilt.js';

export default notBuilt('explain', 'EXPLAIN ANALYZE the claim query and judge the plan', 6);
