import { notBuilt } from './notbuilt.js';

export default notBuilt('partitions', 'partition policies, runway, retention by DETACH/DROP', 4);
