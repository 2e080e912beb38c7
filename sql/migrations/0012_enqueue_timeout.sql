-- qmaint.enqueue() gains p_timeout_ms (a job's own handler timeout, 0009), so
-- a job with a timeout is one statement, which a producer role that may only
-- INSERT can run. CREATE OR REPLACE cannot add a parameter (it would make a
-- second overload that six-argument calls find ambiguous): the old signature
-- goes here, and sql/functions/02_queue.sql creates the new one.
DROP FUNCTION qmaint.enqueue(text, jsonb, timestamptz, integer, integer, timestamptz);
