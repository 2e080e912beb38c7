import { controlStep } from './control.js';
import { healthStep } from './health.js';
import { installStep } from './install.js';
import { partitionsStep } from './partitions.js';
import { queueStep } from './queue.js';
import { scheduleStep } from './schedule.js';
import type { DemoStep } from './types.js';
import { uiStep } from './ui.js';
import { vacuumStep } from './vacuum.js';

/**
 * The demo's story, in order. Each capability adds its step here. Partitions
 * come after vacuum and health because that step travels days ahead with
 * --now; the steps before it all live at the real date.
 */
export const demoSteps: DemoStep[] = [installStep, queueStep, controlStep, vacuumStep, healthStep, partitionsStep, scheduleStep, uiStep];
