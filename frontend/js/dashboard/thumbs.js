// Thumbnails for the dashboard's image grids (the queue, the near duplicates): each image is
// fetched with the Bearer header (an <img src> cannot carry it) and shown through an object
// URL, a few at a time so a grid of fifty does not queue fifty requests ahead of the polling.
// A grid that is rebuilt calls clear(), which revokes the URLs it no longer shows.

import * as api from "../api.js";

const CONCURRENCY = 4;
// Under this natural width an image is drawn with square pixels rather than blurred.
const PIXELATED_BELOW = 104;

/** Run async jobs with at most `limit` in flight. */
async function pool(jobs, limit) {
  const queue = [...jobs];
  const workers = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await queue.shift()();
  });
  await Promise.all(workers);
}

export class Thumbs {
  urls = [];

  /** Load each [img, path] pair; resolves when all are drawn or given up on. */
  load(pairs) {
    return pool(
      pairs.map(
        ([img, path]) =>
          () =>
            this.loadOne(img, path),
      ),
      CONCURRENCY,
    );
  }

  async loadOne(img, path) {
    try {
      const blob = await api.fetchBlob(path);
      const url = URL.createObjectURL(blob);
      this.urls.push(url);
      img.src = url;
      await img.decode();
      if (img.naturalWidth < PIXELATED_BELOW) img.classList.add("pixelated");
    } catch {
      img.alt = "image unavailable";
    }
  }

  clear() {
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
  }
}
