// Sign-in by API token and the project picker, shared by the labelling page and the dashboard.
//
// The token lives in localStorage (the API has no sessions or cookies); the last project is
// remembered beside it. `?project=ID` in the address picks a project explicitly.

import * as api from "./api.js";
import { $, el, fmtInt, hideBanner, setCatalog, showBanner } from "./ui.js";

const PROJECT_KEY = "nextlabel.project";

export function rememberedProjectId() {
  const fromUrl = new URLSearchParams(location.search).get("project");
  const id = Number(fromUrl || localStorage.getItem(PROJECT_KEY));
  return Number.isInteger(id) && id > 0 ? id : null;
}

export function rememberProject(id) {
  localStorage.setItem(PROJECT_KEY, String(id));
}

/** The remembered project; else the only one; else, where asked, the newest; else none. */
function chooseProject(projects, { newestByDefault }) {
  const wanted = rememberedProjectId();
  const remembered = projects.find((project) => project.id === wanted);
  if (remembered) return remembered;
  if (projects.length === 1) return projects[0];
  if (newestByDefault && projects.length) return projects.reduce((a, b) => (b.id > a.id ? b : a));
  return null;
}

function switchProject(id) {
  rememberProject(id);
  const url = new URL(location.href);
  url.searchParams.delete("project");
  location.assign(url);
}

function signInCard({ error } = {}) {
  const input = el("input", {
    id: "token-input",
    type: "password",
    name: "token",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    placeholder: "Paste your token",
    "aria-describedby": "token-help",
  });
  const message = el("p", { class: "form-error", id: "signin-error", role: "alert" }, error || "");
  const submit = el("button", { class: "btn primary", type: "submit" }, "Sign in");
  const form = el(
    "form",
    { id: "signin-form", novalidate: true },
    el("label", { class: "field" }, "API token", input),
    message,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      message.textContent = "Enter the token an admin gave you.";
      return;
    }
    submit.disabled = true;
    message.textContent = "";
    try {
      await api.get("/me", { token });
      api.setToken(token);
      location.reload();
    } catch (failure) {
      message.textContent =
        failure instanceof api.ApiError && failure.status === 401
          ? "That token was not accepted. Check it and try again."
          : failure.message;
      submit.disabled = false;
      input.focus();
    }
  });
  const card = el(
    "div",
    { class: "panel" },
    el("h1", {}, "Sign in to nextlabel"),
    el(
      "p",
      { id: "token-help" },
      "Use the API token an admin created for you (",
      el("code", {}, "nextlabel create-user NAME"),
      " prints one). It is kept in this browser only.",
    ),
    form,
  );
  queueMicrotask(() => input.focus());
  return card;
}

function projectCard(me, projects) {
  const list = el(
    "ul",
    { class: "project-list" },
    projects.map((project) =>
      el(
        "li",
        {},
        el(
          "button",
          { class: "btn", type: "button", onclick: () => switchProject(project.id) },
          el("span", {}, project.name),
          el(
            "span",
            { class: "muted" },
            project.counts ? `${fmtInt(project.counts.pool)} images` : `${project.classes.length} classes`,
          ),
        ),
      ),
    ),
  );
  return el(
    "div",
    { class: "panel" },
    el("h1", {}, `Hello, ${me.name}`),
    el(
      "p",
      {},
      projects.length
        ? "Choose a project."
        : "You are not a member of any project yet. Ask an admin to add you.",
    ),
    list,
    el("p", {}),
    el("button", { class: "btn quiet", type: "button", onclick: signOut }, "Sign out"),
  );
}

function showCard(card) {
  const section = $("#signin");
  section.replaceChildren(card);
  section.hidden = false;
}

export function signOut() {
  api.clearToken();
  location.assign(location.pathname);
}

function fillTopbar(me, projects, project) {
  $("#who-name").textContent = `${me.name} · ${me.role}`;
  $("#who").hidden = false;
  $("#sign-out").addEventListener("click", () => {
    const pending = Number(document.body.dataset.pending || 0);
    if (
      pending &&
      !confirm(
        `${pending} labels are still waiting to be sent. They are kept in this browser and sent when you sign in again with the same token. Sign out?`,
      )
    )
      return;
    signOut();
  });
  $("#pages").hidden = false;
  for (const link of document.querySelectorAll("[data-admin-only]")) link.hidden = me.role !== "admin";
  const select = $("#project-select");
  if (!project || !select) return;
  select.replaceChildren(
    ...projects.map((item) => el("option", { value: item.id, selected: item.id === project.id }, item.name)),
  );
  select.closest(".project-picker").hidden = false;
  select.addEventListener("change", () => switchProject(Number(select.value)));
  for (const link of document.querySelectorAll("[data-project-link]")) {
    link.href = `${link.getAttribute("href").split("?")[0]}?project=${project.id}`;
  }
}

/**
 * Resolve the signed-in annotator and the current project, or show the sign-in card.
 * allowNoProject: the page works without one (the dashboard offers to create one), and
 * opens the newest project when none is remembered instead of asking.
 */
export async function start({ allowNoProject = false } = {}) {
  if (!api.getToken()) {
    showCard(signInCard());
    return null;
  }
  for (let attempt = 0; ; attempt += 1) {
    try {
      const [me, projects, catalog] = await Promise.all([
        api.get("/me"),
        api.get("/projects"),
        api.get("/catalog"),
      ]);
      setCatalog(catalog);
      hideBanner();
      const project = chooseProject(projects, { newestByDefault: allowNoProject });
      if (project) rememberProject(project.id);
      fillTopbar(me, projects, project);
      if (!project && !allowNoProject) {
        showCard(projectCard(me, projects));
        return null;
      }
      return { me, projects, project };
    } catch (failure) {
      if (failure instanceof api.ApiError && failure.status === 401) {
        api.clearToken();
        showCard(signInCard({ error: "Your saved token is no longer accepted. Sign in again." }));
        return null;
      }
      if (!api.isUnavailable(failure)) throw failure;
      showBanner(`Can't reach the nextlabel server. Retrying… (attempt ${attempt + 1})`);
      await new Promise((wake) => setTimeout(wake, Math.min(1000 * 2 ** attempt, 10000)));
    }
  }
}
