// Every call the dashboard makes goes through here: the daemon's own HTTP API, with the
// session cookie (sent by the browser) and the CSRF header the API wants on mutations.

let csrf = null;

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
  /** The API's words, as shown next to the control that caused the error. */
  describe() {
    return this.code ? `${this.message} (${this.code}, HTTP ${this.status})` : this.message;
  }
}

/** Reads the session (and its CSRF token); a page without a session goes to sign-in. */
export async function loadSession() {
  const response = await fetch("session", { credentials: "same-origin" });
  if (response.status === 401) {
    signInAgain();
    throw new ApiError(401, "unauthorized", "signed out");
  }
  const session = await response.json();
  csrf = session.csrf;
  return session;
}

function signInAgain() {
  // The page itself answers 401 with the sign-in form once the session is gone.
  window.location.replace(`./${window.location.hash}`);
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    return new ApiError(response.status, null, `HTTP ${response.status} ${response.statusText}`);
  }
  const error = body && body.error;
  if (error && typeof error === "object") {
    return new ApiError(response.status, error.code || error.type, error.message, error.details);
  }
  return new ApiError(response.status, null, JSON.stringify(body));
}

/**
 * One API call. `body` is sent as JSON unless `contentType` says otherwise (a string body).
 * Answers the parsed JSON (or the Response itself with `raw: true`); throws ApiError.
 */
export async function api(method, path, { body, contentType, raw = false, signal } = {}) {
  const headers = {};
  let payload;
  if (body !== undefined) {
    if (contentType) {
      headers["Content-Type"] = contentType;
      payload = body;
    } else {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
  }
  if (method !== "GET" && csrf) headers["X-Sagellm-CSRF"] = csrf;
  const response = await fetch(path, {
    method,
    headers,
    body: payload,
    credentials: "same-origin",
    signal,
  });
  if (response.status === 401) {
    signInAgain();
    throw await errorFrom(response);
  }
  if (!response.ok) throw await errorFrom(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, options) => api("GET", path, options);
export const post = (path, body, options = {}) => api("POST", path, { ...options, body });
export const put = (path, body, options = {}) => api("PUT", path, { ...options, body });
export const del = (path, options) => api("DELETE", path, options);

/** Paths of the API are absolute from the daemon's root; the page lives under /ui/. */
export const v1 = (path) => `/v1/${path.replace(/^\//, "")}`;
