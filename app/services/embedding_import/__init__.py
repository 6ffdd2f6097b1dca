"""Bring your own embeddings: vectors keyed by file name or sha256, imported into the space
a project with network "embeddings" trains on (core.embeddings.imported_space_key).

The API (`POST /projects/{id}/embeddings`) and `nextlabel import-embeddings` both call
`import_embeddings`, so a file gets the same checks whichever way it arrives. Split by job:
`files` (the accepted layouts, read without unpickling and within a memory bound) and
`plan` (keys matched to items, every problem found, coverage, writing). Callers import from
here.
"""

from app.services.embedding_import.files import FORMATS, FORMATS_TEXT, KeyedVectors, read_vectors
from app.services.embedding_import.plan import (
    EmbeddingsRefused,
    embedding_summary,
    import_embeddings,
)

__all__ = [
    "FORMATS",
    "FORMATS_TEXT",
    "EmbeddingsRefused",
    "KeyedVectors",
    "embedding_summary",
    "import_embeddings",
    "read_vectors",
]
