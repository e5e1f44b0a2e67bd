-- W2: pick one document and complete it, two calls, each its own
-- transaction (the proxy and the extension). Run with pgbench -M simple:
-- the picked subject is substituted inside a quoted literal. An empty
-- queue makes \gset fail and aborts the client, so preload enough
-- documents (fetchq-bench -docs).
SELECT subject FROM fetchq.doc_pick('bench', 0, 1, '5m') \gset
SELECT * FROM fetchq.doc_complete('bench', ':subject');
