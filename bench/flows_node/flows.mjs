// BullMQ FlowProducer: (1) F flows of 1 parent + K no-op children, created one flow per call, then run by
// one process (children concurrency C, parents concurrency 10) until every parent completed: flows/s
// end to end; (2) one flow of 1 parent + W children created in one call, R times: ms per call.
// usage: node flows.mjs PORT [F=50] [K=100] [C=100] [W=1000] [R=5]; prints one JSON line.
import { FlowProducer, Queue, QueueEvents, Worker } from 'bullmq';

const port = +process.argv[2];
const F = +(process.argv[3] || 50), K = +(process.argv[4] || 100), C = +(process.argv[5] || 100);
const W = +(process.argv[6] || 1000), R = +(process.argv[7] || 5);
const connection = { host: '127.0.0.1', port };
const tag = 'fb' + process.pid;
const parents = `${tag}-parents`, kids = `${tag}-kids`;
const opts = { removeOnComplete: true, removeOnFail: true };
const producer = new FlowProducer({ connection });

function flow(k, i) {
  return {
    name: 'sum', queueName: parents, data: { i }, opts,
    children: Array.from({ length: k }, (_, j) => ({ name: 'noop', queueName: kids, data: { j }, opts })),
  };
}

const t0 = performance.now();
for (let i = 0; i < F; i++) await producer.add(flow(K, i));
const t1 = performance.now();
let parentsDone = 0;
let finish;
const allDone = new Promise((resolve) => { finish = resolve; });
const kidWorker = new Worker(kids, async (job) => job.data.j, { connection, concurrency: C });
const parentWorker = new Worker(parents, async (job) => {
  const values = await job.getChildrenValues();
  if (++parentsDone >= F) finish();
  return Object.keys(values).length;
}, { connection, concurrency: 10 });
await allDone;
const t2 = performance.now();
await kidWorker.close(); await parentWorker.close();

const wide = [];
for (let r = 0; r < R; r++) {
  const s = performance.now();
  await producer.add(flow(W, r));
  wide.push(performance.now() - s);
}
wide.sort((a, b) => a - b);
console.log(JSON.stringify({
  system: 'bullmq-node', version: '6.7.0', flows: F, children: K, concurrency: C,
  create_flows_per_s: Math.round(F / (t1 - t0) * 1000 * 10) / 10,
  flows_per_s: Math.round(F / (t2 - t0) * 1000 * 100) / 100,
  jobs_per_s: Math.round(F * (K + 1) / (t2 - t0) * 1000),
  wide_children: W, wide_create_ms: wide.map((x) => Math.round(x * 10) / 10),
  wide_create_ms_median: Math.round(wide[Math.floor(R / 2)] * 10) / 10,
}));
for (const name of [parents, kids]) { const q = new Queue(name, { connection }); await q.obliterate({ force: true }); await q.close(); }
await producer.close();
process.exit(0);
