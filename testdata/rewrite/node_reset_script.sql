SELECT * FROM fetchq.queues; SELECT * FROM fetchq.queue_drop('q1');
UPDATE fetchq.jobs SET attempts=0, iterations=0, next_iteration=now(), last_iteration=null;
TRUNCATE fetchq.metrics;
TRUNCATE fetchq.metrics_writes