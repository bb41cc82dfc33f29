// The REST API, with the token in the Authorization header (never in the URL).

/** An RFC 9457 problem document the server answered (or a network failure). */
export class Problem extends Error {
  constructor(status, body) {
    const detail = (body && (body.detail || body.title)) || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.type = (body && body.type) || "";
    this.title = (body && body.title) || "";
    this.detail = detail;
  }

  /** "forbidden: 'bob' may not read in room 'lab'" */
  describe() {
    const slug = this.type.split("/").pop();
    return slug ? `${slug}: ${this.detail}` : this.detail;
  }
}

export class Api {
  /**
   * @param {string} prefix  the API's path from the host's root, e.g. "/v1/joblib"
   * @param {() => string | null} token
   */
  constructor(prefix, token) {
    this.prefix = prefix;
    this.token = token;
    this.skew = 0; // server clock minus ours, in ms, from the Date header
  }

  async request(method, path, body) {
    const headers = { Authorization: `Bearer ${this.token()}` };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let answer;
    try {
      answer = await fetch(this.prefix + path, init);
    } catch (error) {
      throw new Problem(0, { detail: `the server cannot be reached (${error})` });
    }
    const date = answer.headers.get("Date");
    if (date) {
      // Date has whole seconds: only a clock off by more than that counts.
      const skew = Date.parse(date) - Date.now();
      this.skew = Math.abs(skew) < 2000 ? 0 : skew;
    }
    const text = await answer.text();
    const data = text ? JSON.parse(text) : null;
    if (!answer.ok) throw new Problem(answer.status, data);
    return data;
  }

  get(path) {
    return this.request("GET", path);
  }

  patch(path, body) {
    return this.request("PATCH", path, body);
  }

  /** The server's time now, as well as we know it. */
  now() {
    return Date.now() + this.skew;
  }
}

/** `/rooms/{room}` with the room id escaped for a path. */
export function roomPath(room) {
  return `/rooms/${encodeURIComponent(room)}`;
}
