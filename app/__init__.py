"""nextlabel's web service: REST API, storage and the browser UI. Never imports torch."""
