-- W1: one Fetchq push per transaction (the proxy and the extension).
-- Run with pgbench -M simple: the subject is substituted inside a quoted
-- literal, as Fetchq clients splice values into their SQL text. A 64-bit
-- random number per push makes a duplicate subject (which would push 0
-- documents and show up in the harness's count) practically impossible.
\set r random(1, 1000000000000000000)
SELECT * FROM fetchq.doc_push('bench', 'c:client_id-:r', 0, 0, NOW(), '{}');
