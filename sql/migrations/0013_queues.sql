-- Per-queue settings the server side needs to see. backoff_base/backoff_cap:
-- the retry backoff of the queue's consumers (each consumer records its own
-- when it starts), so a job whose lease ran out is put back by rescue with the
-- same backoff a failure would get. A queue without a row uses 1 second and 1
-- hour.
CREATE TABLE qmaint.queues (
  queue        text PRIMARY KEY CHECK (queue <> '' AND length(queue) <= 128),
  backoff_base interval NOT NULL DEFAULT '1 second' CHECK (backoff_base > interval '0'),
  backoff_cap  interval NOT NULL DEFAULT '1 hour' CHECK (backoff_cap >= backoff_base),
  updated_at   timestamptz NOT NULL DEFAULT now()
);
