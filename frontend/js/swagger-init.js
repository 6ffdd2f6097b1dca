// Starts Swagger UI on /docs (app/docs_pages.py). A file, not an inline script, so the
// page's Content-Security-Policy allows scripts from this origin's files only. The options
// are FastAPI's defaults; validatorUrl null keeps the page from calling an outside validator.
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
