-- The job columns maintenance reads, per managed table (issue 16, `qmaint
-- adopt`): a table adopted from an application keeps its own layout. The
-- defaults are qmaint's own columns, so every existing policy is unchanged.
--   time_column   the partition key (NULL: whatever the table is partitioned on)
--   status_column the column that says whether a row is live
--   live_values   its values that mean live; the first is the waiting state,
--                 the one a straggler move carries forward (the others, e.g.
--                 running, belong to a consumer and stay)
--   key_columns   what identifies a row inside its partition (the move joins on it)
--   touch_column  set to now() by the move; NULL when the table has none
ALTER TABLE qmaint.partition_policy
  ADD COLUMN time_column text,
  ADD COLUMN status_column text NOT NULL DEFAULT 'status',
  ADD COLUMN live_values text[] NOT NULL DEFAULT '{queued,running}' CHECK (cardinality(live_values) BETWEEN 1 AND 16 AND array_position(live_values, NULL) IS NULL),
  ADD COLUMN key_columns text[] NOT NULL DEFAULT '{id}' CHECK (cardinality(key_columns) BETWEEN 1 AND 8 AND array_position(key_columns, NULL) IS NULL),
  ADD COLUMN touch_column text DEFAULT 'updated_at';
