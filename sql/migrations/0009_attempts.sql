-- Fenced attempts and per-job timeouts.
--
-- attempt: how many times the job has been claimed. The claim (src/queue/claim.ts)
-- sets it to attempt + 1 and hands the number to the consumer; completion,
-- failure, heartbeat and release match it, so the result of an attempt whose
-- lease ran out (rescued, then claimed again, even by a consumer with the same
-- worker id) can never change the newer attempt.
--
-- timeout_ms: how long one attempt's handler may run (NULL: the consumer's
-- default). At the deadline the consumer aborts the handler's signal and fails
-- the attempt. Written by qmaint only; the TypeScript producer checks the range
-- (1 .. 2147483647), so no CHECK constraint makes this migration scan every
-- partition.
--
-- Both are added with a constant default: metadata only, no table rewrite, and
-- partitions created later get them through CREATE TABLE ... (LIKE qmaint.jobs).
ALTER TABLE qmaint.jobs ADD COLUMN attempt integer NOT NULL DEFAULT 0;
ALTER TABLE qmaint.jobs ADD COLUMN timeout_ms integer;
