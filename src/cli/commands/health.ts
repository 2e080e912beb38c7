import { notBuilt } from './notbuilt.js';

export default notBuilt('health', 'checks for monitoring, with exit code 4 on critical', 6);
