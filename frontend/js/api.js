// The REST client: every call the UI makes goes through here, to the public /api/v1.
//
// Requests carry `Authorization: Bearer <token>` from localStorage. Failures come back as
// one of two errors so callers can tell "the server said no" (ApiError, with the server's
// message made readable) from "the server could not be reached" (NetworkError). Every
// request also reports whether the server answered, on `connection`, so a page can show a
// banner the moment it goes away and hide it when it is back.

export const API_ROOT = "/api/v1";
const TOKEN_KEY = "nextlabel.token";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

export class NetworkError extends Error {
  constructor(message = "The server could not be reached.") {
    super(message);
    this.name = "NetworkError";
  }
}

/** Fires "change" with detail {online: boolean} whenever reachability flips. */
class Connection extends EventTarget {
  online = true;

  report(online) {
    if (online === this.online) return;
    this.online = online;
    this.dispatchEvent(new CustomEvent("change", { detail: { online } }));
  }
}

export const connection = new Connection();

export function getToken() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  localStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  localStorage.removeItem(TOKEN_KEY);
}

/** A path under /api/v1 ("/me"), or an absolute API path the server handed out (image_url). */
function resolve(path) {
  return path.startsWith("/api/") ? path : API_ROOT + path;
}

function authHeaders(token = getToken()) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Turn FastAPI's error bodies ({detail: "..."} or a 422 list) into one readable sentence. */
export function describeError(status, body) {
  const detail = body && typeof body === "object" ? body.detail : body;
  if (Array.isArray(detail)) {
    return detail
      .map((problem) => {
        const where = (problem.loc || []).filter((part) => part !== "body" && part !== "query");
        return where.length ? `${where.join(".")}: ${problem.msg}` : problem.msg;
      })
      .join("; ");
  }
  if (typeof detail === "string" && detail) return detail;
  const generic = {
    401: "Your token was not accepted. Sign in again.",
    403: "Your role does not allow this.",
    404: "Not found.",
    409: "That conflicts with the current state.",
    413: "The upload is too large.",
    500: "The server hit an error.",
  };
  return generic[status] || `The server answered ${status}.`;
}

/** Statuses that mean the service itself is unavailable, not that the request was wrong. */
export function isUnavailable(error) {
  return (
    error instanceof NetworkError || (error instanceof ApiError && [502, 503, 504].includes(error.status))
  );
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return new ApiError(response.status, describeError(response.status, body), body);
}

/** Low-level fetch with auth, reachability reporting and error translation. */
export async function send(method, path, { json, body, headers = {}, token, signal } = {}) {
  const init = { method, headers: { ...authHeaders(token), ...headers }, signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(resolve(path), init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    connection.report(false);
    throw new NetworkError();
  }
  connection.report(![502, 503, 504].includes(response.status));
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function request(method, path, options = {}) {
  const response = await send(method, path, options);
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export const get = (path, options) => request("GET", path, options);
export const post = (path, json, options = {}) => request("POST", path, { ...options, json });
export const patch = (path, json, options = {}) => request("PATCH", path, { ...options, json });
export const put = (path, json, options = {}) => request("PUT", path, { ...options, json });
export const del = (path, options) => request("DELETE", path, options);

/**
 * Fire and forget a request that must outlive the page (from `pagehide`): with `keepalive` the
 * browser finishes it after the page is gone, and unlike sendBeacon it carries the Bearer
 * header. Nobody is left to read the answer, so failures are ignored.
 */
export function sendOnExit(method, path) {
  fetch(resolve(path), { method, keepalive: true, headers: authHeaders() }).catch(() => {});
}

/** An image (or any file) as a Blob, fetched with the Bearer header. */
export async function fetchBlob(path, options) {
  const response = await send("GET", path, options);
  return response.blob();
}

/** Fetch with the Bearer header and hand the result to the browser as a file download. */
export async function download(path, fallbackName) {
  const response = await send("GET", path);
  const disposition = response.headers.get("Content-Disposition") || "";
  // RFC 6266: the UTF-8 `filename*` is the real name; `filename` is an ASCII stand-in.
  const encoded = /filename\*=UTF-8''([^;\s]+)/i.exec(disposition);
  const plain = /filename="([^"]*)"/i.exec(disposition);
  const name = encoded ? decodeURIComponent(encoded[1]) : plain ? plain[1] : fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // The click starts the download synchronously; the URL only has to outlive this task.
  setTimeout(() => URL.revokeObjectURL(url), 1000);
  return name;
}

/**
 * POST a multipart form with upload progress, which fetch cannot report.
 * onProgress receives (loadedBytes, totalBytes).
 */
export function upload(path, formData, onProgress) {
  return new Promise((resolvePromise, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", resolve(path));
    const token = getToken();
    if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress?.(event.loaded, event.total);
    };
    xhr.onerror = () => {
      connection.report(false);
      reject(new NetworkError());
    };
    xhr.onload = () => {
      connection.report(true);
      if (xhr.status >= 200 && xhr.status < 300) resolvePromise(xhr.response);
      else reject(new ApiError(xhr.status, describeError(xhr.status, xhr.response), xhr.response));
    };
    xhr.send(formData);
  });
}
