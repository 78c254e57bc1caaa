// Socket.IO 4.8 peer for bench/compare.sh: the server most users would pick instead of
// switchyard, written the way its documentation shows (rooms, io.to(room).emit), with
// only what the generator needs.
//
//   node bench/socketio/server.js 127.0.0.1:18100
//
// Subscribers connect to /socket.io/ (WebSocket or HTTP long-polling, Engine.IO 4) with
// ?topic=<t> in the handshake and join that room. A publish is POST /pub/<t> with one
// JSON event as the body (as Nchan takes it): it is parsed and emitted as event "e" to
// the room, which Socket.IO encodes once and writes to every socket; 201 when accepted.
"use strict";
const http = require("node:http");
const { Server } = require("socket.io");

const [host, port] = (process.argv[2] || "127.0.0.1:3000").split(":");
const MAX_BODY = 1 << 20;

const server = http.createServer((req, res) => {
  const m = /^\/pub\/([A-Za-z0-9._:\/-]{1,200})$/.exec(req.url || "");
  if (req.method !== "POST" || !m) {
    res.writeHead(404).end("not found\n");
    return;
  }
  const chunks = [];
  let size = 0;
  req.on("data", (c) => {
    size += c.length;
    if (size > MAX_BODY) {
      res.writeHead(413).end("body over 1 MiB\n");
      req.destroy();
      return;
    }
    chunks.push(c);
  });
  req.on("end", () => {
    if (res.writableEnded) return;
    let event;
    try {
      event = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (e) {
      res.writeHead(400).end(`body is not JSON: ${e.message}\n`);
      return;
    }
    io.to(m[1]).emit("e", event);
    res.writeHead(201).end();
  });
});

const io = new Server(server, {
  transports: ["websocket", "polling"],
  // Nothing is buffered per client beyond what Socket.IO does itself.
  serveClient: false,
  // Both sides on one machine: no per-message compression (switchyard and Nchan have none).
  perMessageDeflate: false,
  httpCompression: false,
});

io.on("connection", (socket) => {
  const topic = socket.handshake.query.topic;
  if (typeof topic === "string" && topic.length > 0) socket.join(topic);
});

server.listen(Number(port), host, () => {
  console.log(`socket.io ${require("socket.io/package.json").version} listening on ${host}:${port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    io.close();
    process.exit(0);
  });
}
