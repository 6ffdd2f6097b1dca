"""The engine: networks, training, image decoding and acquisition; no database, no Celery."""
