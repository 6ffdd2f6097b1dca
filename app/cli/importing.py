"""`nextlabel import`: reading a folder, zip or .npz into a listing, planning and writing the
import with progress bars, and reporting what it found and did; `nextlabel
import-embeddings`: a project's own vectors, checked, written and their coverage reported."""

from __future__ import annotations

import collections
import functools
import zipfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from tqdm import tqdm

from app.cli.base import DataDir, cli, or_exit, settings_for
from app.schemas import EmbeddingImportReport, ImportReport
from app.services.embedding_import import FORMATS_TEXT, EmbeddingsRefused, import_embeddings
from app.services.imports import (
    ImportRefused,
    Listing,
    ZipLimits,
    arrays_listing,
    folder_listing,
    open_zip,
    plan_import,
    write_import,
    zip_listing,
)
from app.services.manifests import LabelUse, parse_manifest
from app.services.projects import find_project
from core.db import make_engine, make_session_factory
from core.embeddings import EmbeddingStore
from core.migrate import upgrade_database
from core.settings import Settings
from core.storage import LocalImageStore
from core.tables import Split


@cli.command("import")
def import_(
    project: Annotated[str, typer.Argument(help="Project id or name.")],
    path: Annotated[Path, typer.Argument(exists=True, help="A folder, a .zip or a .npz.")],
    split: Annotated[Split, typer.Option(help="Where images without a label go.")] = Split.pool,
    labels_as: Annotated[
        LabelUse | None,
        typer.Option(
            "--labels-as",
            help="What labels without a split of their own become (default: labels.csv → "
            "validation, class folders and other manifests → training).",
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A CSV or JSONL manifest (filename,label[,split]), names relative to PATH.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check everything and say what would happen.")
    ] = False,
    skip_problems: Annotated[
        bool,
        typer.Option("--skip-problems", help="Import what has no problem, skip the rest."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Import images and their labels: a folder or zip (class folders, labels.csv or a
    manifest) or an .npz (x, y). Nothing is written while a label would be lost."""
    settings = settings_for(data_dir, existing=True)
    upgrade_database(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    store = LocalImageStore(settings.image_dir)
    with factory() as session:
        target = or_exit(lambda: find_project(session=session, ref=project))
        if path.suffix.lower() == ".npz" and labels_as is None and split == Split.validation:
            labels_as = LabelUse.validation  # an .npz's y always labelled validation items
        listing = _listing(
            path, split=split, labels_as=labels_as, settings=settings, classes=target.classes
        )
        if manifest is not None:
            listing.manifests.append(parse_manifest(manifest.read_bytes(), name=manifest.name))
        # Counts images only: manifests are not files to import.
        with tqdm(total=len(listing.entries), unit="img", desc="check") as bar:
            plan = plan_import(
                session=session,
                project=target,
                listing=listing,
                labels_as=labels_as,
                max_pixels=settings.max_image_pixels,
                progress=bar.update,
            )
        if dry_run:
            _print_report(plan.report(dry_run=True))
            return
        with tqdm(total=len(plan.files), unit="img", desc=f"import → {target.name}") as bar:
            try:
                report = write_import(
                    session=session,
                    store=store,
                    project=target,
                    plan=plan,
                    unlabelled_split=split,
                    skip_problems=skip_problems,
                    progress=bar.update,
                )
            except ImportRefused as refused:
                _print_report(refused.report)
                typer.echo(f"error: {refused}", err=True)
                raise typer.Exit(code=1) from None
    _print_report(report)


def _listing(
    path: Path,
    *,
    split: Split,
    labels_as: LabelUse | None,
    settings: Settings,
    classes: list[str],
) -> Listing:
    if path.is_dir():
        return folder_listing(path)
    if path.suffix.lower() == ".zip":
        limits = ZipLimits(
            max_members=settings.max_zip_members,
            max_ratio=settings.max_zip_ratio,
            max_total_bytes=None,
        )
        archive: zipfile.ZipFile = or_exit(
            lambda: open_zip(path.open("rb"), size=path.stat().st_size, limits=limits)
        )
        return zip_listing(archive)
    if path.suffix.lower() == ".npz":
        return _npz_listing(path, split=split, labels_as=labels_as, classes=classes)
    typer.echo(f"error: {path} is not a folder, .zip or .npz", err=True)
    raise typer.Exit(code=2)


def _npz_listing(
    path: Path, *, split: Split, labels_as: LabelUse | None, classes: list[str]
) -> Listing:
    """x's images; y's labels as --labels-as says, else (as always) only with
    --split validation."""
    arrays = np.load(path, allow_pickle=False)
    images = arrays["x"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        typer.echo("error: x must be uint8 images shaped [N, H, W] or [N, H, W, C]", err=True)
        raise typer.Exit(code=2)
    labels = arrays.get("y")
    if labels is not None and labels_as is None and split != Split.validation:
        typer.echo("note: y is ignored; --labels-as training imports it as labels", err=True)
        labels = None
    names = next((arrays[k] for k in ("classes", "class_names") if k in arrays), None)
    class_names = [str(n) for n in names] if names is not None else classes
    return arrays_listing(images=images, labels=labels, class_names=class_names, stem=path.stem)


def _print_report(report: ImportReport) -> None:
    """What the import found and did (or, on a dry run, would do), on stderr."""
    echo = functools.partial(typer.echo, err=True)
    verb = "would import" if report.dry_run else "imported"
    echo(f"{report.images} images: {report.new_items} new, {report.unchanged} unchanged")
    for use, counts in (("training", report.training), ("validation", report.validation)):
        if counts:
            listed = ", ".join(f"{label} {count}" for label, count in counts.items())
            echo(f"  {verb} {sum(counts.values())} {use} labels: {listed}")
    if report.unlabelled:
        echo(f"  {verb} {report.unlabelled} without a label")
    if not report.dry_run:
        echo(f"created {len(report.created)} items, skipped {len(report.skipped)}")
    elif report.skipped:
        echo(f"would skip {len(report.skipped)}")
    for reason, count in collections.Counter(s.reason for s in report.skipped).most_common(10):
        echo(f"  {count:6d} × {reason}")
    if report.problems:
        echo(f"{len(report.problems)} problems:")
        for problem in report.problems:
            echo(f"  {problem.name}: {problem.reason}")
    for note in report.notes:
        echo(f"note: {note}")
    if report.round_queued is not None:
        echo(f"round {report.round_queued} queued: the labels made it due")


# Uncovered items the command prints; the report (and the API) lists more.
UNCOVERED_PRINTED = 20


@cli.command("import-embeddings")
def import_embeddings_(
    project: Annotated[str, typer.Argument(help="Project id or name.")],
    path: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help=f"The vectors: {FORMATS_TEXT}."),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check everything and say what would happen.")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Remove the project's imported vectors first."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Import your own vectors for a project's images, keyed by file name or sha256. Nothing
    is written while a key, a vector or the dimension has a problem; items left without a
    vector are listed."""
    settings = settings_for(data_dir, existing=True)
    upgrade_database(settings.resolved_database_url)
    factory = make_session_factory(make_engine(settings.resolved_database_url))
    with factory() as session, path.open("rb") as source:
        target = or_exit(lambda: find_project(session=session, ref=project))
        try:
            report = import_embeddings(
                session=session,
                embeddings=EmbeddingStore(settings.embedding_dir),
                project=target,
                source=source,
                name=path.name,
                max_bytes=settings.max_upload_bytes,
                dry_run=dry_run,
                replace=replace,
            )
        except EmbeddingsRefused as refused:
            _print_embedding_report(refused.report)
            typer.echo(f"error: {refused}", err=True)
            raise typer.Exit(code=1) from None
    _print_embedding_report(report)
    if report.problems:  # a dry run that found problems
        raise typer.Exit(code=1)


def _print_embedding_report(report: EmbeddingImportReport) -> None:
    """What the embeddings import found and did (or would do), on stderr."""
    echo = functools.partial(typer.echo, err=True)
    verb = "would import" if report.dry_run else "imported"
    if report.problems:
        echo(f"{report.vectors} vectors: {report.problem_count} problems")
        for problem in report.problems:
            echo(f"  {problem.key if problem.key is not None else '(file)'}: {problem.reason}")
        if report.problem_count > len(report.problems):
            echo(f"  … and {report.problem_count - len(report.problems)} more")
    else:
        echo(f"{verb} {report.imported} vectors of dimension {report.dimension}")
    if report.replaced:
        echo(f"{'would remove' if report.dry_run else 'removed'} {report.replaced} earlier vectors")
    coverage = report.coverage
    echo(f"coverage: {coverage.covered} of {coverage.items} items have a vector")
    if coverage.uncovered:
        echo(f"{coverage.uncovered} items without a vector (rounds leave them out):")
        for item in coverage.uncovered_items[:UNCOVERED_PRINTED]:
            echo(f"  item {item.id}: {item.filename}")
        if coverage.uncovered > UNCOVERED_PRINTED:
            echo(f"  … and {coverage.uncovered - UNCOVERED_PRINTED} more")
    for note in report.notes:
        echo(f"note: {note}")
    if report.round_queued is not None:
        echo(f"round {report.round_queued} queued: it learns on the new vectors")
