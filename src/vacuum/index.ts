export { AUTO, PROFILE_NAMES, STORAGE_PARAMETERS, checkParameter, defaultVacuumProfiles, validateVacuumProfiles } from './profile.js';
export type { ProfileName, ProfileValue, VacuumProfile, VacuumProfiles } from './profile.js';
export { checkStoredProfiles, needsBaseline, planTune, readCounters, tune, tuneServerSide } from './tune.js';
export type { ChurnMeasurement, PlanTuneOptions, TuneOptions, TunePlan, TuneResult, TuneTarget } from './tune.js';
export { estimateBloat, vacuumStatus, xminHolders } from './status.js';
export type { Bloat, BloatMethod, PartitionVacuumStatus, ReplicationStatus, StatusOptions, VacuumStatus, XminHolder, XminHolderKind } from './status.js';
export { planVacuumRun, runVacuum } from './run.js';
export type { RunVacuumOptions, VacuumProgress, VacuumRunOptions, VacuumedPartition } from './run.js';
