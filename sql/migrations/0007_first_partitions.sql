-- The first partitions of qmaint.jobs: the one holding now and a short runway,
-- so enqueue works at once. Last, because creating a partition uses the
-- partition functions (0003) and the vacuum profiles (0004); afterwards
-- `qmaint partitions rotate` keeps the runway the policy asks for.
SELECT qmaint.ensure_partition('qmaint.jobs', now() + n * interval '1 day') FROM generate_series(0, 3) AS n;
