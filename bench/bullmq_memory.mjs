// BullMQ (Node): add N waiting jobs with a payload of SIZE bytes (JSON), then exit; the caller reads
// the server's used_memory before and after. usage: node bullmq_memory.mjs N REDIS_PORT SIZE
import { Queue } from 'bullmq';
const N = +process.argv[2], port = +process.argv[3], size = +process.argv[4];
const q = new Queue('mem-' + process.pid + '-' + N, { connection: { host: '127.0.0.1', port } });
const filler = 'x'.repeat(Math.max(0, size - '{"p":""}'.length));
for (let i = 0; i < N; i += 1000) {
  const batch = [];
  for (let j = i; j < Math.min(N, i + 1000); j++) batch.push({ name: 'noop', data: { p: filler } });
  await q.addBulk(batch);
}
await q.close();
console.log(JSON.stringify({ system: 'bullmq-node', n: N, size }));
process.exit(0);
