import { notBuilt } from './notbuilt.js';

export default notBuilt('jobs', 'list, retry and cancel jobs', 3);
