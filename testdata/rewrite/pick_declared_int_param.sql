-- params: 0,23
SELECT * FROM fetchq.doc_pick($1, $2)