-- A plan step names the relations its statement locks (issue 11, "one
-- executor"). Both executors, qmaint.run_steps() and the TypeScript one in
-- src/plan.ts, ask qmaint.lock_blockers() about exactly these when a step
-- gives up on a lock, instead of reading table names back out of the
-- lock_level text. Schema-qualified names, as text: a step may lock a
-- relation that does not exist yet when the plan is made.
ALTER TYPE qmaint.plan_step ADD ATTRIBUTE locks text[];
