// A Fetchq Node client worker, run through fetchq-proxy by nodeclient_test.go.
// It boots the client (which creates its queue), pushes documents, lets a
// worker complete them, and checks every document was processed once.
const fetchq = require('fetchq');

const N = Number(process.env.DOCS || 200);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const main = async () => {
  const seen = new Map();
  const client = fetchq({
    connectionString: process.env.PGSTRING,
    logLevel: 'error',
    queues: [{ name: 'example', enableNotifications: true, maxAttempts: 3 }],
    workers: [
      {
        queue: 'example',
        concurrency: 4,
        lock: '1m',
        delay: 1,
        sleep: 200,
        handler: async (doc) => {
          seen.set(doc.subject, (seen.get(doc.subject) || 0) + 1);
          return doc.complete({ payload: { ...doc.payload, done: true } });
        },
      },
    ],
  });
  await client.boot();

  for (let i = 0; i < N; i++) {
    await client.doc.push('example', {
      subject: `d${i}`,
      payload: { n: i, note: "it's" },
    });
  }

  const deadline = Date.now() + 60000;
  let completed = 0;
  while (Date.now() < deadline) {
    const r = await client.pool.query(
      "SELECT count(*)::int AS n FROM fetchq_data.example__docs WHERE status = 3 AND payload->>'done' = 'true'",
    );
    completed = r.rows[0].n;
    if (completed === N) break;
    await sleep(100);
  }
  const payload = await client.pool.query(
    "SELECT payload->>'note' AS note FROM fetchq_data.example__docs WHERE subject = 'd7'",
  );
  await client.end();

  const twice = [...seen.values()].filter((n) => n !== 1).length;
  console.log(`completed ${completed}/${N}, handled ${seen.size}, handled more than once ${twice}, note ${payload.rows[0].note}`);
  if (completed !== N || seen.size !== N || twice !== 0 || payload.rows[0].note !== "it's") {
    process.exit(1);
  }
  process.exit(0);
};

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
