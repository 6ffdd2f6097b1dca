// The admin dashboard: how the project is learning, who is labelling, what the current round
// queued, and the controls (settings, retrain, export, upload, members, new project).
//
// This entry owns the page's life: it waits for the session, shows the panels, and refreshes
// them from the public REST API every few seconds, so a round finishing in the worker shows
// up without a reload. Each panel lives in a module of its own under dashboard/; panels that
// act get this object as `board` and read `board.pid` and `board.project` (the latest copy
// from the server, which refresh and a saved settings form replace) and call `board.refresh()`.

import * as api from "./api.js";
import { renderAnnotators, renderClassCounts } from "./dashboard/counts.js";
import { bindCreateProject, focusCreateProject } from "./dashboard/create-project.js";
import { LearningCurve } from "./dashboard/curve.js";
import { DuplicatesPanel } from "./dashboard/duplicates.js";
import { renderEmbedding } from "./dashboard/embedding.js";
import { bindExport } from "./dashboard/export.js";
import { renderEmptyProject, renderHead, setTitle, showNoProject } from "./dashboard/head.js";
import { Members } from "./dashboard/members.js";
import { QueuePanel } from "./dashboard/queue.js";
import { bindRetrain, renderRetrain } from "./dashboard/retrain.js";
import { renderPhaseLegend, renderRounds } from "./dashboard/rounds.js";
import { bindSettings, fillSettings, renderResolvedNetwork } from "./dashboard/settings.js";
import { renderTiles } from "./dashboard/tiles.js";
import { bindUpload } from "./dashboard/upload.js";
import * as session from "./session.js";
import { $, el, hideBanner, showBanner, toast } from "./ui.js";

const POLL_MS = 8000;

class Dashboard {
  constructor({ project }) {
    this.project = project;
    this.root = $("#dashboard");
    this.curve = new LearningCurve();
    this.queue = new QueuePanel();
    this.duplicates = new DuplicatesPanel();
    this.members = new Members(this);
  }

  get pid() {
    return this.project.id;
  }

  async start() {
    this.root.hidden = false;
    bindCreateProject();
    if (!this.project) {
      showNoProject(this.root);
      focusCreateProject();
      return;
    }
    setTitle(this.project);
    renderPhaseLegend();
    fillSettings(this.project);
    bindRetrain(this);
    bindExport(this);
    bindSettings(this);
    bindUpload(this);
    this.members.bind();
    this.duplicates.bind(this);
    api.connection.addEventListener("change", ({ detail }) => {
      if (detail.online) hideBanner();
      else
        showBanner([
          el("strong", {}, "Can't reach the nextlabel server. "),
          "The figures below are from the last successful update; retrying.",
        ]);
    });
    await this.refresh();
    this.members.load();
    setInterval(() => this.refresh(), POLL_MS);
  }

  async refresh() {
    try {
      const [project, metrics, rounds] = await Promise.all([
        api.get(`/projects/${this.pid}`),
        api.get(`/projects/${this.pid}/metrics`),
        api.get(`/projects/${this.pid}/rounds`),
      ]);
      this.project = project;
      renderHead(project);
      renderResolvedNetwork(project);
      renderEmbedding(project);
      renderEmptyProject(this.root, project, metrics);
      renderRetrain(metrics);
      renderTiles(metrics);
      this.curve.render(metrics);
      renderClassCounts(project, metrics);
      renderAnnotators(metrics);
      renderRounds(project, rounds);
      await Promise.all([this.queue.render(metrics.queue), this.duplicates.render(metrics.totals)]);
    } catch (error) {
      if (!api.isUnavailable(error)) toast(`Could not refresh: ${error.message}`, "error");
    }
  }
}

async function main() {
  const ready = await session.start({ allowNoProject: true });
  if (!ready) return;
  if (ready.me.role !== "admin") {
    $("#not-admin").hidden = false;
    return;
  }
  await new Dashboard(ready).start();
}

main().catch((error) => {
  showBanner(`Something went wrong: ${error.message}`);
  throw error;
});
