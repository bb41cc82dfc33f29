// A small Socket.IO v5 client (Engine.IO v4, WebSocket transport only) for the
// dashboard: connect with {token} in the CONNECT packet (never in the URL),
// answer pings, receive events, emit with acks, reconnect with backoff.
//
// Engine.IO packets: 0 open, 1 close, 2 ping, 3 pong, 4 message.
// Socket.IO packets inside a message: 0 connect, 1 disconnect, 2 event,
// 3 ack, 4 connect error; `42["name",{...}]`, `42<id>[...]` asks for `43<id>[...]`.

const ACK_TIMEOUT_MS = 10000;
const MAX_BACKOFF_MS = 10000;

export class Socket {
  /**
   * @param {string} path  the Engine.IO path from the host's root, e.g. "/socket.io"
   * @param {() => string | null} token  read at every (re)connect
   */
  constructor(path, token) {
    this.path = path;
    this.token = token;
    this.handlers = new Map();
    this.acks = new Map();
    this.nextId = 0;
    this.ws = null;
    this.connected = false;
    this.closed = false;
    this.attempt = 0;
    this.pingTimer = null;
    this.retryTimer = null;
  }

  /** Call `handler(data)` for the server event `name`; also "connect",
   * "disconnect" and "refused" (the server said no: {message}). */
  on(name, handler) {
    if (!this.handlers.has(name)) this.handlers.set(name, []);
    this.handlers.get(name).push(handler);
  }

  fire(name, data) {
    for (const handler of this.handlers.get(name) || []) {
      try {
        handler(data);
      } catch (error) {
        console.error(`handler of ${name} failed`, error);
      }
    }
  }

  open() {
    this.closed = false;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}${this.path}/?EIO=4&transport=websocket`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (message) => this.receive(String(message.data));
    ws.onclose = () => this.dropped(ws);
    ws.onerror = () => ws.close();
  }

  receive(packet) {
    switch (packet[0]) {
      case "0": {
        // Engine.IO open: say who we are at once (the server closes sessions
        // that stay unnamed).
        const open = JSON.parse(packet.slice(1));
        this.pingDeadline = open.pingInterval + open.pingTimeout;
        this.watchPing();
        this.send("40" + JSON.stringify({ token: this.token() }));
        break;
      }
      case "2":
        this.watchPing();
        this.send("3");
        break;
      case "1":
        this.ws.close();
        break;
      case "4":
        this.message(packet.slice(1));
        break;
      default:
        break;
    }
  }

  message(text) {
    const type = text[0];
    let rest = text.slice(1);
    if (rest.startsWith("/")) rest = rest.slice(rest.indexOf(",") + 1); // namespace
    const digits = /^\d+/.exec(rest);
    const id = digits ? Number(digits[0]) : null;
    if (digits) rest = rest.slice(digits[0].length);
    const data = rest ? JSON.parse(rest) : null;
    if (type === "0") {
      this.connected = true;
      this.attempt = 0;
      this.fire("connect", data);
    } else if (type === "2" && Array.isArray(data)) {
      this.fire(data[0], data[1]);
    } else if (type === "3" && id !== null && this.acks.has(id)) {
      const { resolve, timer } = this.acks.get(id);
      clearTimeout(timer);
      this.acks.delete(id);
      resolve(Array.isArray(data) ? data[0] : data);
    } else if (type === "4") {
      // Refused: a bad token is not retried, anything else (too many
      // connections, the server starting) is.
      const message = (data && data.message) || "refused";
      this.fire("refused", { message });
      if (/unauthori[sz]ed/i.test(message)) this.close();
      else this.ws.close();
    } else if (type === "1") {
      this.ws.close();
    }
  }

  send(packet) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(packet);
  }

  /** Send `name` with `data` and resolve with the server's ack. */
  emit(name, data) {
    return new Promise((resolve, reject) => {
      if (!this.connected) {
        reject(new Error("not connected"));
        return;
      }
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.acks.delete(id);
        reject(new Error(`no answer to ${name}`));
      }, ACK_TIMEOUT_MS);
      this.acks.set(id, { resolve, reject, timer });
      this.send(`42${id}` + JSON.stringify([name, data]));
    });
  }

  watchPing() {
    clearTimeout(this.pingTimer);
    // A server that stops pinging is gone, even if the TCP connection is not.
    this.pingTimer = setTimeout(() => this.ws && this.ws.close(), this.pingDeadline);
  }

  dropped(ws) {
    if (ws !== this.ws) return;
    clearTimeout(this.pingTimer);
    const was = this.connected;
    this.connected = false;
    this.ws = null;
    for (const { reject, timer } of this.acks.values()) {
      clearTimeout(timer);
      reject(new Error("disconnected"));
    }
    this.acks.clear();
    if (was) this.fire("disconnect", null);
    if (this.closed) return;
    // 0.5 s, 1 s, 2 s, ... up to 10 s, each ±25 %.
    const base = Math.min(500 * 2 ** this.attempt, MAX_BACKOFF_MS);
    this.attempt += 1;
    const delay = base * (0.75 + Math.random() / 2);
    this.fire("retry", { delay });
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close();
  }
}
