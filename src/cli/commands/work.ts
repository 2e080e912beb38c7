import { notBuilt } from './notbuilt.js';

export default notBuilt('work', 'run a consumer that claims and handles jobs', 3);
