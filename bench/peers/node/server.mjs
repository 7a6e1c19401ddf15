// tus-node-server 2.x + @tus/s3-store for bench/peers.py (a benchmark peer, not project code).
//
// Env: PORT, S3_ENDPOINT, S3_BUCKET, PART_SIZE (bytes), MARKS (a file: one JSON line per
// CompleteMultipartUpload with epoch-ms start/end, so the bench can split streaming from
// completion on the same clock as the client). Everything else is @tus/s3-store's default
// (maxConcurrentPartUploads 60, parts spooled to os.tmpdir(), in-memory KV cache).
import { appendFileSync } from "node:fs";
import http from "node:http";
import { S3Store } from "@tus/s3-store";
import { Server } from "@tus/server";

const env = process.env;
const marks = env.MARKS;
const store = new S3Store({
  partSize: Number(env.PART_SIZE || 8 * 1024 * 1024),
  s3ClientConfig: {
    bucket: env.S3_BUCKET,
    region: "us-east-1",
    endpoint: env.S3_ENDPOINT,
    forcePathStyle: true,
    credentials: { accessKeyId: "testing", secretAccessKey: "testing" },
  },
});

// Time CompleteMultipartUpload on the server: the client cannot see where the last part
// became durable, because the PATCH that carries it only returns after completion.
const finish = store.finishMultipartUpload.bind(store);
store.finishMultipartUpload = async (metadata, parts) => {
  const start = Date.now();
  const out = await finish(metadata, parts);
  if (marks) {
    appendFileSync(marks, JSON.stringify({ id: metadata.file.id, start, end: Date.now(),
      parts: parts.length }) + "\n");
  }
  return out;
};

const tus = new Server({ path: "/files", datastore: store, respectForwardedHeaders: false });
const server = http.createServer((req, res) => tus.handle(req, res));
server.listen(Number(env.PORT), "127.0.0.1", () => {
  console.log(`tus listening on ${env.PORT}`);
});
