// The "Export CSV" and "Export JSON" buttons: download the project's labels as a file.

import * as api from "../api.js";
import { $, toast } from "../ui.js";

export function bindExport(board) {
  for (const format of ["csv", "json"]) {
    $(`#export-${format}`).addEventListener("click", async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        const name = await api.download(
          `/projects/${board.pid}/export?format=${format}`,
          `${board.project.name}-labels.${format}`,
        );
        toast(`Downloaded ${name}`, "success");
      } catch (error) {
        toast(`Export failed: ${error.message}`, "error");
      } finally {
        button.disabled = false;
      }
    });
  }
}
