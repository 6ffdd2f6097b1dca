"""nextlabel_client: a typed Python client for a nextlabel service's REST API.

    from nextlabel_client import Client

    with Client("http://localhost:8000", token) as client:
        project = client.create_project("animals", ["cat", "dog"])
        client.upload(project.id, [Path("images.zip")])
        for served in client.next_items(project.id):
            client.label(served.item.id, "cat")

It needs httpx and pydantic only; it imports nothing of the service, and speaks the public
JSON contract of /api/v1 (see /openapi.json). Every route has a method (``Client.routes()``).
"""

from nextlabel_client.client import ApiError, Client, Route, Upload, route_of
from nextlabel_client.models import (
    Annotator,
    AnnotatorCount,
    AnnotatorCreated,
    Catalog,
    CatalogEntry,
    ClassProbability,
    CurvePoint,
    EmbeddingCoverage,
    EmbeddingImportReport,
    EmbeddingProblem,
    EmbeddingSummary,
    Health,
    ImportReport,
    Item,
    ItemPage,
    Label,
    NextItem,
    PhaseTimings,
    Prediction,
    Project,
    ProjectCounts,
    ProjectMetrics,
    QueueEntry,
    QueueFreshness,
    Reply,
    Round,
    RoundDetail,
    RoundMetrics,
    ServedItem,
    Skip,
    SkippedFile,
    UncoveredItem,
    ValidationSummary,
    Webhook,
    WebhookCreated,
    WebhookDelivery,
)

__all__ = [
    "Annotator",
    "AnnotatorCount",
    "AnnotatorCreated",
    "ApiError",
    "Catalog",
    "CatalogEntry",
    "ClassProbability",
    "Client",
    "CurvePoint",
    "EmbeddingCoverage",
    "EmbeddingImportReport",
    "EmbeddingProblem",
    "EmbeddingSummary",
    "Health",
    "ImportReport",
    "Item",
    "ItemPage",
    "Label",
    "NextItem",
    "PhaseTimings",
    "Prediction",
    "Project",
    "ProjectCounts",
    "ProjectMetrics",
    "QueueEntry",
    "QueueFreshness",
    "Reply",
    "Round",
    "RoundDetail",
    "RoundMetrics",
    "Route",
    "ServedItem",
    "Skip",
    "SkippedFile",
    "UncoveredItem",
    "Upload",
    "ValidationSummary",
    "Webhook",
    "WebhookCreated",
    "WebhookDelivery",
    "route_of",
]
